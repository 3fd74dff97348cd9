"""Benchmark JSON -> markdown tables for docs/benchmarks.md.

``python -m bench.to_markdown out/bench_cpu.json [more.json ...]``
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [f"Device: **{meta['device']}**; torch {meta['torch']}, OpenCV {meta['opencv']}; weights: "
             f"{meta['weights']}; detection threshold {meta['detection_threshold']}, max {meta['max_keypoints']} "
             f"keypoints; commit {meta['git_commit']}, {meta['date_utc']}; load average at start "
             f"{', '.join(f'{v:.1f}' for v in meta.get('load_average_at_start', []))}.", ""]
    tables = {}
    for row in data["results"]:
        tables.setdefault((row["section"], row["resolution"]), []).append(row)
    for (section, resolution), rows in tables.items():
        lines += [f"**{section}**, {resolution}", "",
                  "| variant | median ms | p10 ms | p90 ms | x baseline | notes |", "|---|---:|---:|---:|---:|---|"]
        skip = {"section", "resolution", "variant", "ms_median", "ms_p10", "ms_p90", "n", "baseline",
                "ratio_to_baseline"}
        for r in rows:
            notes = ", ".join(f"{k}={fmt(v)}" for k, v in r.items() if k not in skip and v == v)
            lines.append(f"| {r['variant']} | {fmt(r['ms_median'])} | {fmt(r['ms_p10'])} | {fmt(r['ms_p90'])} | "
                         f"{fmt(r['ratio_to_baseline'])} | {notes} |")
        lines.append("")
    if data.get("targets"):
        lines += ["| target | measured | goal | met | detail |", "|---|---:|---|---|---|"]
        for t in data["targets"]:
            lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else 'NO'} | {t['detail']} |")
        lines.append("")
    for note in data.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for path in paths:
        print(to_markdown(json.loads(Path(path).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
