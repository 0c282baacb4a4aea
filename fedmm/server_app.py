"""Flower ServerApp (Message API): reads the run config once, runs the strategy, writes outputs."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedmm.checkpoint import CheckpointError, checkpoint_round
from fedmm.config import PRE_KEY_BEHAVIOUR, RunConfig
from fedmm.factory import data_for, model_for, set_threads
from fedmm.outputs import RunRecorder, format_table, hold_run_dir, new_run_dir, summarize
from fedmm.protocol import dict_to_arrays
from fedmm.sim_dispatch import index_grid_dispatch
from strategies.factory import build_strategy

app = ServerApp()


#: Run-config keys a resumed run may change (they do not change what the run computes).
RESUMABLE_CHANGES = ("resume-round", "threads", "node-timeout", "round-timeout")


def resume_dir(cfg: RunConfig, run_config: Mapping[str, Any]) -> Path:
    """The run directory a run with ``resume-round = k`` continues: ``out-dir/run-name``,
    which must hold the checkpoint of round ``k``, no ``final.json``, and a ``config.json``
    that agrees with ``run_config`` (but for :data:`RESUMABLE_CHANGES`).

    Raises
    ------
    CheckpointError
        Any of these does not hold (nothing was changed).
    """
    run_dir = (Path(cfg.out_dir).expanduser() / cfg.run_name).resolve()
    if (run_dir / "final.json").exists():
        raise CheckpointError(f"{run_dir} has final.json: that run is complete")
    found = checkpoint_round(run_dir)
    if found != cfg.resume_round:
        raise CheckpointError(f"resume-round = {cfg.resume_round} but {run_dir} holds "
                              + ("no checkpoint" if found is None else f"the checkpoint of round {found}"))
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{run_dir}/config.json cannot be read: {exc}") from None
    saved = {**{k: v for k, v in PRE_KEY_BEHAVIOUR.items() if k not in saved}, **saved}
    changed = sorted(k for k, v in run_config.items()
                     if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v)
    if changed:
        raise CheckpointError(f"the run config differs from {run_dir}/config.json in "
                              f"{[(k, saved[k], run_config[k]) for k in changed]}; a resumed run "
                              f"must be the same run (run.py --resume <run-dir> reads config.json)")
    return run_dir


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_mapping(context.run_config)
    set_threads(cfg)
    if cfg.sim_indexed_dispatch and index_grid_dispatch(grid):
        log(INFO, "fedmm: simulation engine: per-node message index on (fedmm/sim_dispatch.py)")
    data = data_for(cfg)
    if cfg.resume_round:
        run_dir = (Path(cfg.out_dir).expanduser() / cfg.run_name).resolve()
    else:
        # A relative out-dir is taken from this process's working directory, which is the
        # SuperLink's (run.py and deploy/run.sh pass an absolute one): the log names the path.
        run_dir = new_run_dir(cfg.out_dir, cfg.run_name,
                              tag=f"{data.name}-{cfg.backbone}-{cfg.method}-s{cfg.seed}").resolve()
    # This process is the directory's only writer until it ends (a stopped run that is still
    # ending keeps a resumed one out; run.py waits for it before marking the run failed).
    if cfg.resume_round and not run_dir.is_dir():
        raise CheckpointError(f"resume-round = {cfg.resume_round} but {run_dir} does not exist")
    with hold_run_dir(run_dir):
        if cfg.resume_round:
            resume_dir(cfg, context.run_config)
            log(INFO, "fedmm: resuming %s after round %d", run_dir, cfg.resume_round)
        _run(grid, context, cfg, data, run_dir)


def _run(grid: Grid, context: Context, cfg: RunConfig, data, run_dir: Path) -> None:
    """The run itself, writing into ``run_dir`` (created, or validated for a resume)."""
    recorder = RunRecorder(run_dir)
    if not cfg.resume_round:
        # The raw run config (method sections included: run.py --resume reads it back), then
        # the typed values and the dataset sizes.
        recorder.write_config({**context.run_config, **cfg.to_dict(), "run-dir": str(run_dir),
                               "num-users": data.num_users, "num-items": data.num_items,
                               "num-train": data.num_train})
    log(INFO, "fedmm: %s, %d users, %d items, %d training interactions -> %s",
        data.name, data.num_users, data.num_items, data.num_train, run_dir)
    if not Path(cfg.out_dir).expanduser().is_absolute():
        log(WARNING, "fedmm: out-dir '%s' is relative: results go to %s (the SuperLink's working "
            "directory); give an absolute out-dir", cfg.out_dir, run_dir)
    if cfg.checkpoint_every and not cfg.client_state_dir:
        log(WARNING, "fedmm: checkpoint-every = %d but client-state-dir is empty: the clients' "
            "private state lives in node memory only, so a resumed run restarts it (run.py "
            "sets client-state-dir for the simulation and in-process engines)", cfg.checkpoint_every)
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
    if cfg.resume_round:
        # The strategy's state, RNGs and own logs as after that round; rounds.jsonl too.
        done, initial = strategy.restore(run_dir)
        recorder.rewind(done)
    else:
        done, initial = 0, strategy.initial_arrays(initial)
    strategy.start(grid=grid, initial_arrays=dict_to_arrays(initial),
                   num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout,
                   first_round=done + 1)
    extra = strategy.finish()
    final = summarize(strategy.history, strategy.best, cfg.select_metric, time.time() - t)
    final.update(extra)
    final.update({"dataset": data.name, "backbone": cfg.backbone, "method": cfg.method, "seed": cfg.seed})
    if strategy.resumed_from:
        final["resumed-from"] = list(strategy.resumed_from)
    recorder.write_final(final)
    print(format_table(final), flush=True)
    print(f"fedmm: results in {run_dir}", flush=True)
    log(INFO, "fedmm final: %s", json.dumps(final["test"]))
