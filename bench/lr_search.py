#!/usr/bin/env python
"""Validation-selected learning-rate / optimiser search per backbone on short runs.

Each grid point is a set of run-config overrides trained with the single-process replica
(``bench/replica.py``: the project's own client update, aggregation and evaluation); points
are ranked by the best VALIDATION value of ``select-metric`` over the run, never by test.
Test figures are printed beside for the record only.

    python bench/lr_search.py --backbone pfedrec --rounds 100 --workers 2 \\
        --grid "" "items-lr=26912.0" "private-lr=0.5" "local-epochs=5"

Prints a table (one row per grid point, best first) and writes it as JSON lines to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", required=True)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default="", help="overrides common to every grid point")
    p.add_argument("--grid", nargs="+", required=True,
                   help='one quoted override string per point ("" = the defaults)')
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON-lines file of the results (appended)")
    return p.parse_args(argv)


def one_point(backbone: str, rounds: int, eval_every: int, seed: int, base: str, point: str) -> dict:
    import run as runner
    from bench.replica import run_replica

    overrides = f"backbone='{backbone}' num-server-rounds={rounds} seed={seed} {base} {point}"
    ns = argparse.Namespace(config=[], run_config=overrides, out=None)
    cfg = runner.resolve_config(ns)[1]
    res = run_replica(cfg, eval_every, log=lambda s: None)
    sel = cfg.select_metric[len("valid_"):]
    return {"backbone": backbone, "point": point or "(defaults)", "base": base, "rounds": rounds,
            "seed": seed, "best_round": res["best_round"], f"valid_{sel}": res["valid"][sel],
            "valid_sampled_hr@10": res["valid"]["sampled_hr@10"],
            "test_sampled_hr@10": res["test"]["sampled_hr@10"],
            "test_full_hr@50": res["test"]["full_hr@50"], "seconds": round(res["seconds"], 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    jobs = [(args.backbone, args.rounds, args.eval_every, args.seed, args.base, g) for g in args.grid]
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        rows = list(ex.map(one_point, *zip(*jobs)))
    sel = next(k for k in rows[0] if k.startswith("valid_") and k != "valid_sampled_hr@10")
    rows.sort(key=lambda r: -r[sel])
    cols = ["point", "best_round", sel, "valid_sampled_hr@10", "test_sampled_hr@10", "test_full_hr@50"]
    print(f"{args.backbone}, {args.rounds} rounds, seed {args.seed}, base: {args.base or '-'}; "
          f"ranked by {sel} (validation)")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if args.out:
        with open(args.out, "a") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
