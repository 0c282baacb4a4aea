#!/usr/bin/env python
"""Table of the replica runs of ``bench/results_replica.sh`` with the floor and ceiling rows.

For each backbone: MostPop (training popularity, the floor), the federated replica runs
(mean ± std over the seeds found), and the same backbone trained centrally
(:func:`fedmm.reference.reference_rows`, seed 0, cached), all on ML-100K's split, negatives and
metrics, in percent, test split at the best validation round.

    python bench/replica_table.py outputs/replica200 --centralised-epochs 200
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))

BACKBONES = ("pfedrec", "fedmf", "fedncf", "fedrap", "fedpergnn")
METRICS = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@50", "full_ndcg@50")


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="folder of <backbone>-s<seed>.json replica results")
    p.add_argument("--centralised-epochs", type=int, default=None,
                   help="default: the run config's centralised-epochs")
    p.add_argument("--centralised-lr", type=float, default=None)
    p.add_argument("--centralised-trainer", choices=("best", "groups", "adam"), default=None,
                   help="default: the run config's centralised-trainer")
    p.add_argument("-c", "--run-config", default="",
                   help="overrides for the reference rows, as the runs had them (e.g. "
                        "\"split-ties='item-id' same-init=false\" for runs of the old defaults)")
    args = p.parse_args(argv)
    import run as runner
    from bench.replica import run_settings
    from fedmm.factory import data_for, set_threads
    from fedmm.reference import reference_rows

    print("| backbone | row | seeds | best round | " + " | ".join(METRICS) + " |")
    print("|---" * (4 + len(METRICS)) + "|")
    for b in BACKBONES:
        files = sorted(args.runs.glob(f"{b}-s*.json"))
        if not files:
            continue
        extra = ""
        if args.centralised_epochs is not None:
            extra += f" centralised-epochs={args.centralised_epochs}"
        if args.centralised_lr is not None:
            extra += f" centralised-lr={args.centralised_lr}"
        if args.centralised_trainer is not None:
            extra += f" centralised-trainer='{args.centralised_trainer}'"
        ns = argparse.Namespace(config=[], run_config=f"{args.run_config} backbone='{b}'{extra}", out=None)
        cfg = runner.resolve_config(ns)[1]
        runs = [json.loads(f.read_text().splitlines()[-1]) for f in files]
        mine = run_settings(cfg)
        for f, r in zip(files, runs):
            differ = {k: (v, mine[k]) for k, v in r.get("config", {}).items() if mine.get(k) != v}
            if differ:
                raise SystemExit(f"{f} was run with {differ} (run, reference rows): pass the run's "
                                 "settings with -c so its floor and ceiling sit on the same split")
        set_threads(cfg)
        ref = reference_rows(cfg, data_for(cfg))
        rows = [("MostPop (floor)", "–", "–", [ref["mostpop"]["test"]])]
        rows.append(("federated (replica)", str(len(runs)),
                     ", ".join(str(r["best_round"]) for r in runs), [r["test"] for r in runs]))
        if "centralised" in ref:
            c = ref["centralised"]
            how = (f"Adam {c['lr']}" if c.get("trainer", "adam") == "adam"
                   else f"own update, shared Adam {c['lr']}")
            rows.append((f"centralised ({how}, {c['epochs']} epochs)", "0",
                         f"epoch {c['best_epoch']}", [c["test"]]))
        for name, seeds, best, tests in rows:
            vals = " | ".join(cell([t[m] for t in tests]) for m in METRICS)
            print(f"| {b} | {name} | {seeds} | {best} | {vals} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
