#!/usr/bin/env python
"""Single-process replica of fedmm's base round loop, for fast probes (not a Flower run).

It calls the project's own code: :func:`fedmm.factory.build_client` for each sampled user,
:meth:`FedRecClient.fit` / :meth:`FedRecClient.evaluate`, private state kept per user between
rounds as ``context.state`` would, and the aggregation helpers of ``strategies/aggregation``.
What it leaves out is Flower's transport: the same sampling seed gives a different (but equally
random) set of users than a Flower run, so figures agree in distribution, not digit for digit.

    python bench/replica.py --run-config "backbone='fedmf' num-server-rounds=40" --eval-every 10

Prints one line per evaluation and a final JSON line with the validation-selected test metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(APP_DIR))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-config", "-c", default="", help="run-config overrides (as run.py)")
    p.add_argument("--config", action="append", default=[], help="TOML override file (repeatable)")
    p.add_argument("--eval-every", type=int, default=None, help="default: the run config's eval-every")
    p.add_argument("--metric", default="sampled_hr@10", help="metric printed per evaluation")
    return p.parse_args(argv)


def run_replica(cfg, eval_every: int, metric: str = "sampled_hr@10", log=print) -> dict:
    """Train ``cfg`` (a :class:`~fedmm.config.RunConfig`, method ``base``) in one process.

    Returns
    -------
    dict
        ``best_round``, ``valid`` and ``test`` (mean metrics at the best ``cfg.select_metric``
        round), ``history`` (round -> mean metrics), ``seconds``.
    """
    import random

    from fedmm.factory import build_client, data_for, model_for, set_threads
    from fedmm.outputs import split_metrics
    from strategies.aggregation import better, itemwise_average, mean_metrics, weighted_average

    if cfg.method != "base":
        raise SystemExit("bench/replica.py replays method 'base' only")
    set_threads(cfg)
    data = data_for(cfg)
    server = model_for(cfg, data.num_items)
    state = server.state_dict()
    keys = server.shared_keys()
    global_arrays = {k: state[k].detach().cpu().numpy().copy() for k in keys}
    private: dict[int, dict[str, np.ndarray]] = {}
    rng = random.Random(cfg.seed)
    users = list(range(data.num_users))
    k = max(1, int(len(users) * cfg.fraction_train))
    history, best, t0 = {}, None, time.time()

    def client(u):
        c = build_client(cfg, u)
        if u in private:
            c.load_private_state(private[u])
        return c

    for rnd in range(1, cfg.num_server_rounds + 1):
        sampled = sorted(rng.sample(users, k))
        params = [global_arrays[key] for key in keys]
        states, weights, counts, losses = [], [], [], []
        conf = {"server-round": rnd, "aggregation": cfg.aggregation}
        for u in sampled:
            c = client(u)
            new, n, m = c.fit(params, conf)
            private[u] = c.private_state()
            states.append(dict(zip(keys, new)))
            weights.append(n)
            losses.append(m["train-loss"])
            if cfg.aggregation == "itemwise":
                counts.append(c.upload_extras()["item-counts"])
        new_global = weighted_average(states, [1.0] * len(states) if cfg.aggregation == "mean" else weights)
        if cfg.aggregation == "itemwise":
            new_global["item_emb.weight"] = itemwise_average(
                [s["item_emb.weight"] for s in states], counts, global_arrays["item_emb.weight"])
        global_arrays = new_global
        if rnd % eval_every == 0 or rnd == cfg.num_server_rounds:
            params = [global_arrays[key] for key in keys]
            per_user = [client(u).evaluate(params, {"server-round": rnd})[2] for u in users]
            agg = mean_metrics(per_user)
            history[rnd] = agg
            if better(agg[cfg.select_metric], None if best is None else best[1][cfg.select_metric]):
                best = (rnd, agg)
            log(f"round {rnd:4d} loss {np.mean(losses):.4f} valid_{metric} {agg['valid_' + metric]:.4f} "
                f"test_{metric} {agg['test_' + metric]:.4f} ({time.time() - t0:.0f}s)")
    assert best is not None
    rnd, agg = best
    return {"best_round": rnd,
            "valid": split_metrics(agg, "valid"), "test": split_metrics(agg, "test"),
            "history": history, "seconds": time.time() - t0}


def run_settings(cfg) -> dict:
    """The settings of ``cfg`` that decide which reference rows belong beside a run (split and
    initial/aggregation defaults), as recorded in the result JSON for bench/replica_table.py."""
    return {"split-ties": cfg.split_ties, "same-init": cfg.same_init, "aggregation": cfg.aggregation}


def main(argv=None) -> int:
    args = parse_args(argv)
    import run as runner

    ns = argparse.Namespace(config=args.config, run_config=args.run_config, out=None)
    cfg = runner.resolve_config(ns)[1]
    out = run_replica(cfg, args.eval_every or cfg.eval_every, args.metric)
    out.pop("history")
    # the settings that decide which reference rows belong beside it (bench/replica_table.py)
    out["config"] = run_settings(cfg)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
