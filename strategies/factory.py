"""Builds the strategy named by ``method`` from a typed config (used by the ServerApp)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedmm.config import RunConfig
from strategies.base import FedRecStrategy


def build_strategy(cfg: RunConfig, data: Any, on_round: Callable[[dict], None] | None = None,
                   run_dir: Path | None = None, model: Any = None) -> FedRecStrategy:
    common = dict(num_rounds=cfg.num_server_rounds, fraction_train=cfg.fraction_train,
                  eval_every=cfg.eval_every, select_metric=cfg.select_metric,
                  aggregation=cfg.aggregation, seed=cfg.seed, on_round=on_round,
                  min_available_nodes=data.num_users)
    if cfg.method == "base":
        return FedRecStrategy(**common)
    raise ValueError(f"method '{cfg.method}' has no strategy")
