#!/usr/bin/env python
"""Per-round trajectories of runs, read from their ``rounds.jsonl``.

    python bench/trajectory.py outputs/results-gfmfr/main/gfmfr-pfedrec-s0
    python bench/trajectory.py --fields test_sampled_hr@10 gfmfr-lambda-t --every 20 RUN [RUN ...]
    python bench/trajectory.py --median gfmfr-fusion-r2 --from 51 --to 100 RUN

Default mode prints one Markdown table per run: a row for every round that has any of
``--fields`` (the evaluation rounds for metric fields), thinned to rounds that are multiples of
``--every`` plus the last round. Metrics (``test_*``, ``valid_*``) are shown in percent.
``--median FIELD`` prints instead, per run, the median / min / max of FIELD over rounds
``--from`` to ``--to`` (inclusive) and its value at the last of those rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEFAULT_FIELDS = ["test_sampled_hr@10", "valid_sampled_ndcg@10", "gfmfr-lambda-t",
                  "gfmfr-fusion-r2", "gfmfr-signal-corr", "gfmfr-rec-loss"]


def read_rounds(run_dir: Path) -> list[dict]:
    path = run_dir / "rounds.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: pass a run directory written by run.py")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fmt(field: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and field.startswith(("test_", "valid_")):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(run_dir: Path, fields: list[str], every: int) -> str:
    rows = [r for r in read_rounds(run_dir) if any(r.get(f) is not None for f in fields)]
    if not rows:
        return f"{run_dir.name}: none of {fields} recorded"
    last = rows[-1]["round"]
    rows = [r for r in rows if r["round"] % every == 0 or r["round"] == last]
    out = [f"{run_dir.name}", "", "| round | " + " | ".join(fields) + " |",
           "|---" * (len(fields) + 1) + "|"]
    out += [f"| {r['round']} | " + " | ".join(fmt(f, r.get(f)) for f in fields) + " |" for r in rows]
    return "\n".join(out)


def median_line(run_dir: Path, field: str, lo: int, hi: int) -> str:
    vals = [(r["round"], r[field]) for r in read_rounds(run_dir)
            if lo <= r["round"] <= hi and isinstance(r.get(field), (int, float))]
    if not vals:
        return f"{run_dir.name}: no {field} in rounds {lo}-{hi}"
    xs = [v for _, v in vals]
    return (f"{run_dir.name}: {field} rounds {lo}-{hi} ({len(xs)} values): median "
            f"{fmt(field, statistics.median(xs))}, min {fmt(field, min(xs))}, max "
            f"{fmt(field, max(xs))}, at round {vals[-1][0]} {fmt(field, xs[-1])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--fields", nargs="+", default=DEFAULT_FIELDS)
    ap.add_argument("--every", type=int, default=20, help="show rounds that are multiples of this")
    ap.add_argument("--median", metavar="FIELD", help="summarise FIELD over a round range instead")
    ap.add_argument("--from", dest="lo", type=int, default=1)
    ap.add_argument("--to", dest="hi", type=int, default=10**9)
    args = ap.parse_args()
    for run in args.runs:
        if args.median:
            print(median_line(run, args.median, args.lo, args.hi))
        else:
            print(table(run, args.fields, max(1, args.every)))
            print()


if __name__ == "__main__":
    main()
