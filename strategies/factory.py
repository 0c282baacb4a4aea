"""Builds the strategy named by ``method`` from a typed config (used by the ServerApp)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedmm.config import ConfigError, RunConfig
from strategies.base import FedRecStrategy


def build_strategy(cfg: RunConfig, data: Any, on_round: Callable[[dict], None] | None = None,
                   run_dir: Path | None = None, model: Any = None,
                   run_config: Mapping[str, Any] | None = None) -> FedRecStrategy:
    """The strategy of ``cfg.method``. Method strategies get ``common`` (the base keyword
    arguments), the raw ``run_config`` to read their own typed section from, the split ``data``,
    the ``run_dir`` for their outputs and the server's ``model`` (a backbone instance whose
    scoring functions they may use)."""
    common = dict(fraction_train=cfg.fraction_train,
                  eval_every=cfg.eval_every, select_metric=cfg.select_metric,
                  aggregation=cfg.aggregation, seed=cfg.seed, on_round=on_round,
                  min_available_nodes=data.num_users, node_timeout=cfg.node_timeout,
                  min_train_replies=cfg.min_train_replies, max_eval_failures=cfg.max_eval_failures,
                  # checkpoints go to the run directory (none without one)
                  checkpoint_every=cfg.checkpoint_every if run_dir is not None else 0,
                  checkpoint_dir=run_dir,
                  secagg=cfg.secagg_params if cfg.secagg else None,
                  secagg_eval=cfg.secagg_eval)
    if cfg.secagg_eval:   # every user in one secure sum: fail now, not at the first evaluation
        from fedmm.secagg import SecAggError

        try:
            cfg.secagg_params.for_clients(data.num_users)
        except SecAggError as exc:
            raise ConfigError(f"secagg-eval: {exc}") from None
    if cfg.method == "base":
        return FedRecStrategy(**common)
    if cfg.method == "gfmfr":
        from strategies.gfmfr import GFMFR

        return GFMFR.build(common, cfg, run_config or {}, data, run_dir, model)
    if cfg.method == "fedsllm":
        from strategies.fedsllm import FedSLLM

        return FedSLLM.build(common, cfg, run_config or {}, data, run_dir, model)
    raise ValueError(f"method '{cfg.method}' has no strategy")
