"""Numbers written in YAML text, read the same by every configuration file of the package.

PyYAML implements YAML 1.1, which reads ``1e-3`` (exponent, no dot) as a string; YAML 1.2 and
ROS's parameter parser read it as a float. The node's parameter files (``params.py``) and the
training configs (``training/config.py``) both go through :func:`parse_float_text`, so a value
means the same in either.
"""
from __future__ import annotations

import re
from typing import Any

#: A number in exponent notation without a dot (``1e-3``): YAML 1.2 and ROS's parameter parser
#: read it as a float, PyYAML (YAML 1.1) as a string.
EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_float_text(value: Any) -> Any:
    """``"1e-3"`` -> ``0.001``; anything else unchanged."""
    if isinstance(value, str) and EXPONENT_FLOAT.match(value.strip()):
        return float(value)
    return value
