"""Builds models, clients and strategies from a :class:`~fedmm.config.RunConfig`."""
from __future__ import annotations

import numpy as np
import torch

from fedmm.config import RunConfig
from fedmm.data.split import load_federated
from fedmm.models import build_model
from fedmm.models.base import FedRecModel


def data_for(cfg: RunConfig):
    """The (per-process cached) split of ``cfg.dataset``."""
    return load_federated(cfg.dataset, cfg.rating_threshold, cfg.min_interactions, cfg.cache_dir)


def model_for(cfg: RunConfig, num_items: int, user: int | None = None,
              train_items: np.ndarray | None = None) -> FedRecModel:
    """A backbone whose initial weights are fixed by (seed, user); ``user=None`` is the server's
    copy that supplies the initial shared parameters."""
    torch.manual_seed(cfg.seed * 1_000_003 + (-1 if user is None else user))
    model = build_model(cfg.backbone, num_items, cfg.embedding_dim)
    if train_items is not None and hasattr(model, "set_neighbors"):
        model.set_neighbors(torch.as_tensor(train_items, dtype=torch.long))
    return model


def client_class(method: str):
    from clients.base import FedRecClient

    classes = {"base": FedRecClient}
    if method not in classes:
        raise ValueError(f"method '{method}' has no client; choose one of {sorted(classes)}")
    return classes[method]


def build_client(cfg: RunConfig, user: int):
    """This user's client for ``cfg.method``."""
    from clients.base import LocalSettings

    data = data_for(cfg)
    ud = data.user(user)
    model = model_for(cfg, data.num_items, user, ud.train)
    return client_class(cfg.method)(model, ud, LocalSettings.from_config(cfg))
