#!/usr/bin/env python
"""How much of a client's selection repeats from one of its rounds to the next (FedSLLM runs).

    python bench/selection_overlap.py outputs/results-fedsllm-overlap/fedsllm-s0 outputs/results-fedsllm-overlap/random-s0

Reads ``selection-repeat``, ``selection-repeat-clients`` and ``selection-coverage`` from each run
directory's ``rounds.jsonl`` (the FedSLLM strategy logs them from commit 661f2a5 on; see
:mod:`clients.fedsllm`). Prints per run: the mean repeat over all client-rounds that had an
earlier round (share of a client's selection already selected by it in any earlier round;
random selection at S gives about the coverage before the round, 1 - (1 - S)^k after k
rounds), and the mean coverage (share of a client's positives selected at least
once) of the clients trained in the first and the last tenth of the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def overlap(run_dir: Path) -> dict:
    """Repeat and coverage figures of one run directory; SystemExit naming it if it has none."""
    path = run_dir / "rounds.jsonl"
    if not path.exists():
        raise SystemExit(f"{path}: no such file (not a run directory?)")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    cov = [r["selection-coverage"] for r in rows if "selection-coverage" in r]
    if not cov:
        raise SystemExit(f"{path}: no 'selection-coverage' in any round; the run predates the "
                         "coverage bookkeeping or is not a FedSLLM-strategy run")
    rep = [(r["selection-repeat"], r["selection-repeat-clients"]) for r in rows
           if r.get("selection-repeat-clients")]
    tenth = max(1, len(cov) // 10)
    return {
        "run": run_dir.name,
        "rounds": len(rows),
        "repeat": (sum(v * n for v, n in rep) / sum(n for _, n in rep)) if rep else float("nan"),
        "repeat-client-rounds": sum(n for _, n in rep),
        "coverage-first": statistics.mean(cov[:tenth]),
        "coverage-last": statistics.mean(cov[-tenth:]),
        "tenth": tenth,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print("| run | rounds | repeat (client-rounds) | coverage, first tenth | coverage, last tenth |")
    print("|---|---|---|---|---|")
    for o in map(overlap, args.runs):
        print(f"| {o['run']} | {o['rounds']} | {100 * o['repeat']:.1f} % ({o['repeat-client-rounds']}) | "
              f"{100 * o['coverage-first']:.1f} % | {100 * o['coverage-last']:.1f} % |")


if __name__ == "__main__":
    main()
