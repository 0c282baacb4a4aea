#!/usr/bin/env python
"""Per-client costs of runs from their ``rounds.jsonl`` (the FedSLLM paper's Table 5 columns).

    python bench/round_costs.py outputs/results-gfmfr/sweep/pfedrec-s0 outputs/results-fedsllm/*-s0

Prints, per run directory: median training-round seconds, mean client selection time
(``selection-ms``, FedSLLM samplers only), bytes sent to / received from each client per round
(measured from the real payloads), and median / max server-side seconds (``server-seconds``).
The first directory is the reference for the "vs first" byte differences. ``--totals`` adds a
second table: the run's summed round seconds and server-side seconds, the server's share, and
the number and median seconds of FedSLLM's LLM revisions (``prototype-seconds``) and encoder
alignments (``align-seconds``).

    python bench/round_costs.py --totals outputs/t20/gfmfr/{baseline-pfedrec-le5,pfedrec-le5-l003}-s0
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def costs(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    sel = [r["selection-ms"] for r in rows if r.get("selection-ms") is not None]
    return {
        "run": run_dir.name,
        "rounds": len(rows),
        "round-s": statistics.median(r["seconds"] for r in rows),
        "selection-ms": statistics.mean(sel) if sel else None,
        "down-B": statistics.mean(r["bytes-down-per-client"] for r in rows),
        "up-B": statistics.mean(r["bytes-up-per-client"] for r in rows),
        "server-s-median": statistics.median(r["server-seconds"] for r in rows),
        "server-s-max": max(r["server-seconds"] for r in rows),
        "run-s": sum(r["seconds"] for r in rows),
        "server-s": sum(r["server-seconds"] for r in rows),
        "llm-s": [r["prototype-seconds"] for r in rows if r.get("prototype-seconds") is not None],
        "align-s": [r["align-seconds"] for r in rows if r.get("align-seconds") is not None],
    }


def median_or_dash(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--totals", action="store_true",
                    help="also the run's summed seconds, server share and LLM revision times")
    args = ap.parse_args()
    table = [costs(p) for p in args.runs]
    ref = table[0]
    print("| run | rounds | median round s | selection ms/client | bytes down/client | "
          "bytes up/client | up vs first | median / max server s |")
    print("|---|---|---|---|---|---|---|---|")
    for c in table:
        sel = "-" if c["selection-ms"] is None else f"{c['selection-ms']:.2f}"
        print(f"| {c['run']} | {c['rounds']} | {c['round-s']:.2f} | {sel} | {c['down-B']:,.0f} | "
              f"{c['up-B']:,.0f} | {c['up-B'] - ref['up-B']:+,.0f} | "
              f"{c['server-s-median']:.3f} / {c['server-s-max']:.2f} |")
    if not args.totals:
        return
    print()
    print("| run | round s (sum) | server s (sum) | server share | LLM revisions | "
          "median revision s | median alignment s |")
    print("|---|---|---|---|---|---|---|")
    for c in table:
        print(f"| {c['run']} | {c['run-s']:.0f} | {c['server-s']:.0f} | "
              f"{100 * c['server-s'] / c['run-s']:.1f} % | {len(c['llm-s'])} | "
              f"{median_or_dash(c['llm-s'])} | {median_or_dash(c['align-s'])} |")


if __name__ == "__main__":
    main()
