#!/usr/bin/env python
"""Markdown table (mean ± std over seeds) from the ``*-summary.json`` files run.py writes.

    python bench/tables.py outputs/results-base --metrics sampled_hr@10 sampled_ndcg@10 full_hr@50 full_ndcg@50
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows(directory: Path, metrics: list[str], scale: float) -> list[str]:
    out = []
    for path in sorted(directory.glob("*-summary.json")):
        finals = json.loads(path.read_text())["finals"]
        cells = []
        for m in metrics:
            vals = [f["test"][m] * scale for f in finals]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.2f} ± {sd:.2f}")
        rounds = sorted({f["best_round"] for f in finals})
        out.append(f"| {path.name.removesuffix('-summary.json')} | " + " | ".join(cells)
                   + f" | {len(finals)} | {','.join(map(str, rounds))} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--metrics", nargs="+", default=["sampled_hr@10", "sampled_ndcg@10", "full_hr@50", "full_ndcg@50"])
    ap.add_argument("--scale", type=float, default=100.0, help="multiply metrics (default: percent)")
    args = ap.parse_args()
    print("| run | " + " | ".join(args.metrics) + " | seeds | best rounds |")
    print("|---" * (len(args.metrics) + 3) + "|")
    for d in args.dirs:
        for line in rows(Path(d), args.metrics, args.scale):
            print(line)


if __name__ == "__main__":
    main()
