"""Builds models, clients and strategies from a :class:`~fedmm.config.RunConfig`."""
from __future__ import annotations


import numpy as np
import torch

from fedmm.config import RunConfig
from fedmm.device import seed_torch
from fedmm.data.split import load_federated
from fedmm.models import build_model
from fedmm.models.base import FedRecModel


def data_for(cfg: RunConfig):
    """The (per-process cached) split of ``cfg.dataset``."""
    return load_federated(cfg.dataset, cfg.rating_threshold, cfg.min_interactions, cfg.cache_dir,
                          cfg.split_ties)


def model_for(cfg: RunConfig, num_items: int, user: int | None = None,
              train_items: np.ndarray | None = None) -> FedRecModel:
    """A backbone whose initial weights are fixed by ``seed`` (``same-init``: every user's model
    starts as the server's copy, whose shared parameters are the initial global ones, as the
    official PFedRec/FedRAP engines copy one model to every user) or by (seed, user)
    (``same-init = false``: private parts drawn per user); ``user=None`` is the server's copy."""
    per_user = user is not None and not cfg.same_init
    seed_torch(cfg.seed * 1_000_003 + (user if per_user else -1))
    model = build_model(cfg.backbone, num_items, cfg.embedding_dim)
    if train_items is not None and hasattr(model, "set_neighbors"):
        model.set_neighbors(torch.as_tensor(train_items, dtype=torch.long))
    return model


def client_class(method: str):
    """The NumPyClient subclass of ``method`` (imported lazily: a run imports only its own)."""
    if method == "base":
        from clients.base import FedRecClient as cls
    elif method == "gfmfr":
        from clients.gfmfr import GFMFRClient as cls
    elif method == "fedsllm":
        from clients.fedsllm import FedSLLMClient as cls
    else:
        raise ValueError(f"method '{method}' has no client; choose base, gfmfr or fedsllm")
    return cls


def set_threads(cfg: RunConfig) -> None:
    """Limit torch to ``cfg.threads`` intra-op threads in this process (clients run 1 per CPU;
    2 threads each on a 2-core machine made small ops ~100x slower, measured)."""
    if torch.get_num_threads() != cfg.threads:
        torch.set_num_threads(cfg.threads)


def build_client(cfg: RunConfig, user: int):
    """This user's client for ``cfg.method`` (its model, its data, ``cfg.local``)."""
    set_threads(cfg)
    data = data_for(cfg)
    ud = data.user(user)
    model = model_for(cfg, data.num_items, user, ud.train)
    return client_class(cfg.method)(model, ud, cfg.local)
