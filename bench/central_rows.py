#!/usr/bin/env python
"""Only the reference rows (MostPop and centralised) of each backbone, without a federated run.

Calls :func:`fedmm.reference.reference_rows` (cached under ``<cache>/reference/``) for each
backbone with the run config's defaults plus ``-c`` overrides, and prints one Markdown row per
backbone and setting: the centralised row's best validation epoch, its validation selection
metric and its test metrics in percent (test at the validation-selected epoch). Several
``-c`` values form a grid (one row each); choose among them on the ``valid`` column only.

    python bench/central_rows.py -c "centralised-trainer='groups'" -c "centralised-trainer='adam'"
    python bench/central_rows.py --backbones fedrap -c "centralised-lr=0.003" -c "centralised-lr=0.03"
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))

BACKBONES = ("pfedrec", "fedmf", "fedncf", "fedrap", "fedpergnn")
METRICS = ("sampled_hr@10", "sampled_ndcg@10", "full_hr@50", "full_ndcg@50")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated")
    p.add_argument("-c", "--run-config", action="append", default=None,
                   help="run-config overrides (TOML assignments); repeat for a grid")
    p.add_argument("--mostpop", action="store_true", help="also print the MostPop row")
    p.add_argument("-v", "--verbose", action="store_true", help="log every evaluated epoch")
    args = p.parse_args(argv)
    import run as runner
    from fedmm.factory import data_for, set_threads
    from fedmm.reference import reference_rows

    settings = args.run_config or [""]
    print("| backbone | setting | trainer | best epoch | valid " + "select" + " | "
          + " | ".join(METRICS) + " | seconds |", flush=True)
    print("|---" * (6 + len(METRICS)) + "|", flush=True)
    for b in args.backbones.split(","):
        for extra in settings:
            ns = argparse.Namespace(config=[], run_config=f"backbone='{b}' {extra}", out=None)
            cfg = runner.resolve_config(ns)[1]
            set_threads(cfg)
            t0 = time.time()
            log = (lambda m: print(f"  [{b} {extra}] {m}", file=sys.stderr, flush=True)) if args.verbose else None
            ref = reference_rows(cfg, data_for(cfg), log=log)
            if args.mostpop:
                vals = " | ".join(f"{100 * ref['mostpop']['test'][m]:.2f}" for m in METRICS)
                sel = 100 * ref["mostpop"]["valid"][cfg.select_metric.removeprefix("valid_")]
                print(f"| {b} | MostPop | – | – | {sel:.2f} | {vals} | – |", flush=True)
            c = ref.get("centralised")
            if c is None:
                continue
            vals = " | ".join(f"{100 * c['test'][m]:.2f}" for m in METRICS)
            sel = 100 * c["valid"][cfg.select_metric.removeprefix("valid_")]
            cands = ", ".join(f"{t} {100 * v['valid']:.2f}" for t, v in c.get("candidates", {}).items())
            print(f"| {b} | {extra.strip() or 'defaults'} | {c.get('trainer', 'adam')} lr {c['lr']}, "
                  + (f"(best of valid: {cands}) " if cands else "") +
                  f"{c['epochs']} epochs | {c['best_epoch']} | {sel:.2f} | {vals} | "
                  f"{c['seconds']:.0f} (this call {time.time() - t0:.0f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
