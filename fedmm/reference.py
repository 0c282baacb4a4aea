"""Floor and ceiling rows beside every federated result (no Flower import).

* **MostPop** (floor): every item scored by its training popularity (how many users have it
  among their training positives), the same ranking for every user, no learning. A federated
  recommender that does not beat it has learned nothing personal.
* **Centralised** (ceiling): the same backbone trained in one process on all users' training
  data: one shared item table (and shared layers) and one private part per user, exactly the
  models the clients hold, but every user's gradient reaches the shared parameters at every
  step. The gap to the federated run is what federation costs.

Both are evaluated with the federated run's split, sampled negatives, cut-offs, protocols and
pessimistic ties (:func:`fedmm.metrics.leave_one_out_metrics`), and the centralised row is
validation-selected like the federated one.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedmm.data.sampling import eval_negatives, sample_negatives
from fedmm.data.split import FederatedData
from fedmm.metrics import leave_one_out_metrics
from fedmm.models.base import FedRecModel
from fedmm.outputs import split_metrics


def popularity(data: FederatedData) -> np.ndarray:
    """Training popularity: float64 ``(num_items,)``, users having each item in training."""
    return np.bincount(data.train_items, minlength=data.num_items).astype(np.float64)


def evaluate_scores(data: FederatedData, score_fn: Callable[[int], np.ndarray], seed: int,
                    topk: tuple[int, ...], protocols: tuple[str, ...],
                    num_eval_negatives: int = 99) -> dict[str, float]:
    """Mean leave-one-out metrics over all users.

    Parameters
    ----------
    score_fn : callable
        ``user -> float (num_items,)`` scores of the whole catalogue for that user.
    seed : int
        Fixes the sampled negatives (the same as the federated run's for the same seed).

    Returns
    -------
    dict
        ``{"{valid|test}_{protocol}_{hr|ndcg}@K": mean}``.
    """
    sums: dict[str, float] = {}
    for u in range(data.num_users):
        ud = data.user(u)
        negs = eval_negatives(u, data.num_items, ud.interacted, num_eval_negatives, seed)
        m = leave_one_out_metrics(score_fn(u), ud.train, ud.valid, ud.test, negs, topk, protocols)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / data.num_users for k, v in sums.items()}


def mostpop(data: FederatedData, seed: int, topk: tuple[int, ...], protocols: tuple[str, ...],
            num_eval_negatives: int = 99) -> dict[str, float]:
    """MostPop metrics (see module docstring), same keys as :func:`evaluate_scores`."""
    pop = popularity(data)
    return evaluate_scores(data, lambda u: pop, seed, topk, protocols, num_eval_negatives)


@dataclass(frozen=True)
class CentralSettings:
    """Training of the centralised row.

    Attributes
    ----------
    epochs : int
        Passes over all users' training positives (each with fresh negatives).
    lr : float
        Adam learning rate of every parameter.
    users_per_step : int
        Users whose mean BCE losses are summed into one Adam step.
    num_negatives : int
        Sampled negatives per positive, as in local training.
    eval_every : int
        Epochs between validation evaluations (the last epoch is always evaluated).
    """

    epochs: int = 30
    lr: float = 0.01
    users_per_step: int = 32
    num_negatives: int = 4
    eval_every: int = 5


def share_modules(models: list[FedRecModel]) -> None:
    """Make every model use the first model's shared modules (item table and shared layers),
    so one optimiser step on them is seen by every user. In place."""
    ref = models[0]
    tops = sorted({k.split(".", 1)[0] for k in ref.shared_keys()})
    for m in models[1:]:
        for name in tops:
            setattr(m, name, getattr(ref, name))


def centralised(data: FederatedData, build: Callable[[int], FedRecModel], settings: CentralSettings,
                seed: int, topk: tuple[int, ...], protocols: tuple[str, ...], select_metric: str,
                num_eval_negatives: int = 99, log: Callable[[str], None] | None = None) -> dict:
    """Train the backbone centrally on all users and return its validation-selected metrics.

    Parameters
    ----------
    build : callable
        ``user -> FedRecModel``: that user's freshly initialised model (as its client builds it).
    select_metric : str
        Validation metric (e.g. ``"valid_sampled_ndcg@10"``) that picks the reported epoch.

    Returns
    -------
    dict
        ``best_epoch``, ``test`` and ``valid`` (metrics without the split prefix), ``seconds``.
    """
    t0 = time.time()
    models = [build(u) for u in range(data.num_users)]
    share_modules(models)
    params = {id(p): p for m in models for p in m.parameters()}
    opt = torch.optim.Adam(list(params.values()), lr=settings.lr)
    rng = np.random.default_rng([seed, 7])
    torch.manual_seed(seed)
    users = [data.user(u) for u in range(data.num_users)]
    best: tuple[int, dict[str, float]] | None = None
    for epoch in range(1, settings.epochs + 1):
        for m in models:
            m.train()
            m.set_round(epoch)
        order = rng.permutation(data.num_users)
        for start in range(0, order.size, settings.users_per_step):
            opt.zero_grad(set_to_none=True)
            loss = 0.0
            for u in order[start:start + settings.users_per_step]:
                ud, model = users[u], models[u]
                negs = sample_negatives(data.num_items, ud.train, ud.train.size * settings.num_negatives, rng)
                items = torch.as_tensor(np.concatenate([ud.train, negs]))
                labels = torch.cat([torch.ones(ud.train.size), torch.zeros(negs.size)])
                logits = model(items)
                loss = loss + F.binary_cross_entropy_with_logits(logits, labels) + model.regularization(items)
            loss.backward()
            opt.step()
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            for m in models:
                m.eval()
            metrics = evaluate_scores(data, lambda u: models[u].full_scores().cpu().numpy().astype(np.float64),
                                      seed, topk, protocols, num_eval_negatives)
            if best is None or metrics[select_metric] > best[1][select_metric]:
                best = (epoch, metrics)
            if log is not None:
                log(f"centralised epoch {epoch}: {select_metric} {metrics[select_metric]:.4f}")
    assert best is not None
    epoch, metrics = best
    return {"best_epoch": epoch,
            "test": split_metrics(metrics, "test"), "valid": split_metrics(metrics, "valid"),
            "seconds": time.time() - t0}


def reference_rows(cfg, data: FederatedData, log: Callable[[str], None] | None = None) -> dict:
    """The ``mostpop`` and ``centralised`` rows of a run config, cached on disk.

    Parameters
    ----------
    cfg : fedmm.config.RunConfig
        The federated run's config: dataset, backbone, embedding size, seed, negatives,
        evaluation protocol and cut-offs are taken from it; ``centralised-epochs`` (0 skips the
        centralised row) and ``centralised-lr`` set the centralised training.
    data : FederatedData
        The run's split.

    Returns
    -------
    dict
        ``{"mostpop": {"test": ..., "valid": ...}, "centralised": {"test", "valid",
        "best_epoch", "seconds", "epochs", "lr"}}`` (``centralised`` absent when skipped).
        The centralised row is cached under ``<cache>/reference/`` keyed by everything it
        depends on, so runs of several methods on one backbone train it once.
    """
    import hashlib
    import json
    import os
    from pathlib import Path

    from fedmm.data.split import default_cache_dir
    from fedmm.factory import model_for

    protocols, topk = cfg.local.protocols, cfg.local.topk
    mp = mostpop(data, cfg.seed, topk, protocols, cfg.local.num_eval_negatives)
    out: dict = {"mostpop": {"test": split_metrics(mp, "test"), "valid": split_metrics(mp, "valid")}}
    if cfg.centralised_epochs <= 0:
        return out
    stamp = {"v": 1, "dataset": cfg.dataset, "thr": cfg.rating_threshold, "min": cfg.min_interactions,
             "users": data.num_users, "items": data.num_items, "train": data.num_train,
             "backbone": cfg.backbone, "dim": cfg.embedding_dim, "seed": cfg.seed,
             "negatives": cfg.local.num_negatives, "eval-negatives": cfg.local.num_eval_negatives,
             "topk": list(topk), "protocols": list(protocols), "select": cfg.select_metric,
             "epochs": cfg.centralised_epochs, "lr": cfg.centralised_lr}
    key = hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    path = root / "reference" / f"centralised-{key}.json"
    if path.is_file():
        out["centralised"] = json.loads(path.read_text())
        return out
    settings = CentralSettings(epochs=cfg.centralised_epochs, lr=cfg.centralised_lr,
                               num_negatives=cfg.local.num_negatives)
    row = centralised(data, lambda u: model_for(cfg, data.num_items, u, data.user(u).train), settings,
                      cfg.seed, topk, protocols, cfg.select_metric, cfg.local.num_eval_negatives, log)
    row.update({"epochs": cfg.centralised_epochs, "lr": cfg.centralised_lr})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, path)
    out["centralised"] = row
    return out
