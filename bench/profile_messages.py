#!/usr/bin/env python
"""Where a client message's time goes: cProfile around a short run on the in-process engine.

    python bench/profile_messages.py --rounds 4 --top 30

Runs ``--rounds`` rounds (evaluation at the last) of the run config (``--run-config`` overrides,
as run.py) with fedmm's ServerApp and ClientApp in this process (fedmm/inprocess.py), and
prints the functions with the most time of their own, then the most cumulative time. Outputs
of the run go to a temporary directory, removed afterwards.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-config", "-c", default="")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    import run as runner
    from fedmm.data.split import load_federated
    from fedmm.inprocess import run_inprocess

    with tempfile.TemporaryDirectory() as out:
        ns = argparse.Namespace(config=[], out=out, run_config=(
            f"{args.run_config} num-server-rounds={args.rounds} eval-every={args.rounds} "
            "run-name='profile' checkpoint-every=0"))
        cfg, rc = runner.resolve_config(ns)
        data = load_federated(rc.dataset, rc.rating_threshold, rc.min_interactions, rc.cache_dir, rc.split_ties)
        prof = cProfile.Profile()
        prof.enable()
        run_inprocess(cfg, data.num_users)
        prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
