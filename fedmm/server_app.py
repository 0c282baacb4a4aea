"""Flower ServerApp (Message API): reads the run config once, runs the strategy, writes outputs."""
from __future__ import annotations

import json
import time
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedmm.config import RunConfig
from fedmm.factory import data_for, model_for, set_threads
from fedmm.outputs import RunRecorder, format_table, new_run_dir, summarize
from fedmm.protocol import dict_to_arrays
from strategies.factory import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_mapping(context.run_config)
    set_threads(cfg)
    data = data_for(cfg)
    # A relative out-dir is taken from this process's working directory, which is the SuperLink's
    # (run.py and deploy/run.sh pass an absolute one): the log names the absolute path.
    run_dir = new_run_dir(cfg.out_dir, cfg.run_name,
                          tag=f"{data.name}-{cfg.backbone}-{cfg.method}-s{cfg.seed}").resolve()
    recorder = RunRecorder(run_dir)
    recorder.write_config({**cfg.to_dict(), "run-dir": str(run_dir),
                           "num-users": data.num_users, "num-items": data.num_items,
                           "num-train": data.num_train})
    log(INFO, "fedmm: %s, %d users, %d items, %d training interactions -> %s",
        data.name, data.num_users, data.num_items, data.num_train, run_dir)
    if not Path(cfg.out_dir).expanduser().is_absolute():
        log(WARNING, "fedmm: out-dir '%s' is relative: results go to %s (the SuperLink's working "
            "directory); give an absolute out-dir", cfg.out_dir, run_dir)
    log(INFO, "fedmm: waiting for %d nodes, one per user (simulation: num-supernodes=%d; deployment: "
        "SuperNodes with --node-config \"partition-id=<0..%d> num-partitions=%d\"), for up to "
        "node-timeout=%.0f s before round 1", data.num_users, data.num_users, data.num_users - 1,
        data.num_users, cfg.node_timeout)

    def on_round(rec: dict) -> None:
        recorder.log_round(rec)
        msg = (f"round {rec['round']:>4}/{cfg.num_server_rounds}: {rec['clients']} clients, "
               f"loss {rec.get('train-loss', float('nan')):.4f}, {rec['seconds']:.2f}s")
        if "eval-users" in rec:
            msg += f" | {cfg.select_metric} {rec[cfg.select_metric]:.4f}"
        print(msg, flush=True)

    model = model_for(cfg, data.num_items)
    state = model.state_dict()
    initial = {k: state[k].detach().cpu().numpy() for k in model.shared_keys()}
    # The strategy waits (with a timeout) for one node per user before round 1.
    strategy = build_strategy(cfg, data, on_round=on_round, run_dir=run_dir, model=model,
                              run_config=context.run_config)
    t = time.time()
    initial = strategy.initial_arrays(initial)
    strategy.start(grid=grid, initial_arrays=dict_to_arrays(initial),
                   num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout)
    extra = strategy.finish()
    final = summarize(strategy.history, strategy.best, cfg.select_metric, time.time() - t)
    final.update(extra)
    final.update({"dataset": data.name, "backbone": cfg.backbone, "method": cfg.method, "seed": cfg.seed})
    recorder.write_final(final)
    print(format_table(final), flush=True)
    print(f"fedmm: results in {run_dir}", flush=True)
    log(INFO, "fedmm final: %s", json.dumps(final["test"]))
