"""YAML configuration: a tool's ``default_conf`` dict, updated by a YAML file, then by
``--set key.sub=value`` overrides. Merged once, at start-up; unknown keys are errors (a typo in a
config must not silently train with a default)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional

import yaml

from ..yaml_numbers import parse_float_text


class ConfigError(ValueError):
    """A configuration file or override that cannot be used, with the reason."""


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; keys must exist in ``base`` (except under dicts
    whose default is empty, which are free-form)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in out:
            if base:
                raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(map(str, base)))})")
            out[key] = value
        elif isinstance(out[key], dict) and out[key] and isinstance(value, dict):
            out[key] = merge(out[key], value, path + ".")
        else:
            out[key] = coerce_like(out[key], value, path)
    return out


def coerce_like(default, value, path: str):
    """``value`` in the type of a numeric or bool ``default``: ``1e-3`` (text to PyYAML) and ``1``
    become floats where the default is a float; text where a number or bool belongs is an error
    that names the key (rather than a crash deep inside training)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        value = parse_float_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int) and isinstance(value, str):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    return value


def parse_override(text: str) -> dict:
    """``"a.b=3"`` -> ``{"a": {"b": 3}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value)
    return nested


def load_config(defaults: dict, path: Optional[str] = None, overrides: Iterable[str] = ()) -> dict:
    conf = copy.deepcopy(defaults)
    if path:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level, found {type(loaded).__name__}")
        conf = merge(conf, loaded)
    for text in overrides or ():
        conf = merge(conf, parse_override(text))
    return conf


def dump_config(conf: dict, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(conf, sort_keys=False))
