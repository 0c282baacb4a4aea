"""Floor and ceiling rows beside every federated result (no Flower import).

* **MostPop** (floor): every item scored by its training popularity (how many users have it
  among their training positives), the same ranking for every user, no learning. A federated
  recommender that does not beat it has learned nothing personal.
* **Centralised** (ceiling): the same backbone trained in one process on all users' training
  data: one shared item table (and shared layers) and one private part per user, exactly the
  models the clients hold, but every user's gradient reaches the shared parameters at every
  step. The gap to the federated run is what federation costs.

  Two trainers (``centralised-trainer``), and a choice between them:

  - ``"groups"`` (the default of :class:`CentralSettings`): the backbone's own **update
    steps** (PFedRec: score function first, then the item table in a second forward pass)
    and per-group optimisers
    (:class:`fedmm.models.optim.GroupedOptimizer`, as the client builds them). The private
    groups (``private``, ``local_items``) use the backbone's own local optimisers with the run's
    overrides, one per user: each user's private part sees exactly the loss it sees on its
    client (its mean BCE), so the client's rates and clipping transfer unchanged. The shared
    groups (``items``, ``shared``) use Adam at ``centralised-lr``: their federated rates are
    scaled for the server's average over a round's clients (``item_table_lr``'s ``N * eta``
    factor) and do not transfer to one summed loss, while Adam's step does not depend on the
    gradient's scale.
  - ``"adam"``: one Adam at ``centralised-lr`` over every parameter, one joint step (the
    trainer before issue 12's per-group update; it trains FedRAP's private tables and
    FedNCF's user vector badly, docs/results.md section 1.1).
  - ``"best"`` (default of the run config): both, each cached, and the row whose validation
    ``select-metric`` is higher (a tie keeps ``"groups"``). Neither trainer is the better one
    for every backbone on ML-100K (docs/results.md section 1.1), and a ceiling should be the
    best centralised model we can train, chosen without looking at the test split.

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
from fedmm.models.optim import GROUPS, SHARED_GROUPS, GroupedOptimizer, GroupOptim, resolve_optimizers
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
        Adam learning rate of the shared groups (``trainer="groups"``) or of every parameter
        (``trainer="adam"``).
    users_per_step : int
        Users whose mean BCE losses are summed into one step.
    num_negatives : int
        Sampled negatives per positive, as in local training.
    eval_every : int
        Epochs between validation evaluations (the last epoch is always evaluated).
    trainer : {"groups", "adam"}
        See the module docstring.
    overrides : tuple of (group, optimizer or "", lr or 0)
        Run-config overrides of the backbone's private-group optimisers (``"groups"`` only;
        overrides of the shared groups are ignored: they use Adam at ``lr``).
    weight_decay : float
        Added to every group's weight decay (``"groups"`` only), as ``weight-decay`` on a client.
    """

    epochs: int = 30
    lr: float = 0.01
    users_per_step: int = 32
    num_negatives: int = 4
    eval_every: int = 5
    trainer: str = "groups"
    overrides: tuple[tuple[str, str, float], ...] = ()
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.trainer not in ("groups", "adam"):
            raise ValueError(f"unknown centralised trainer {self.trainer!r}; choose groups or adam")


def private_optimizers(model: FedRecModel, overrides=()) -> dict[str, GroupOptim]:
    """The optimisers of ``model``'s non-empty private groups in the ``"groups"`` trainer: the
    backbone's defaults with the run-config ``overrides`` (``(group, name, lr)`` triples)."""
    optims = resolve_optimizers(model.default_optimizers(), {g: (n, lr) for g, n, lr in overrides})
    groups = model.param_groups()
    return {g: o for g, o in optims.items() if g not in SHARED_GROUPS and groups.get(g)}


class _Updater:
    """Optimiser steps of one centralised trainer over the users' (module-sharing) models.

    ``steps``: the update steps, each a tuple of groups; ``zero_grad(users)`` / ``step(groups,
    users)`` act on the shared parameters and on the private parts of ``users``."""

    def __init__(self, models: list[FedRecModel], settings: CentralSettings) -> None:
        self.steps: list[tuple[str, ...]]
        if settings.trainer == "adam":
            params = {id(p): p for m in models for p in m.parameters()}
            self._adam = torch.optim.Adam(list(params.values()), lr=settings.lr)
            self.steps = [GROUPS]
            return
        ref = models[0]
        self.steps = [tuple(step) for step in ref.update_steps]

        def only(groups: dict, keep) -> dict:
            return {g: (list(ps) if g in keep else []) for g, ps in groups.items()}

        adam = GroupOptim("adam", settings.lr)
        self._shared = GroupedOptimizer(only(ref.param_groups(), SHARED_GROUPS),
                                        {g: adam for g in SHARED_GROUPS}, self.steps,
                                        settings.weight_decay)
        self._private = []
        for m in models:
            optims = private_optimizers(m, settings.overrides)
            self._private.append(GroupedOptimizer(only(m.param_groups(), optims), optims,
                                                  self.steps, settings.weight_decay))

    def zero_grad(self, users) -> None:
        if hasattr(self, "_adam"):
            self._adam.zero_grad(set_to_none=True)
            return
        self._shared.zero_grad()
        for u in users:
            self._private[u].zero_grad()

    def step(self, groups: tuple[str, ...], users) -> None:
        if hasattr(self, "_adam"):
            self._adam.step()
            return
        self._shared.step([g for g in groups if g in self._shared.optimizers])
        for u in users:
            opt = self._private[u]
            opt.step([g for g in groups if g in opt.optimizers])


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
    updater = _Updater(models, settings)
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
            batch = order[start:start + settings.users_per_step]
            samples = []
            for u in batch:
                ud = users[u]
                negs = sample_negatives(data.num_items, ud.train, ud.train.size * settings.num_negatives, rng)
                samples.append((torch.as_tensor(np.concatenate([ud.train, negs])),
                                torch.cat([torch.ones(ud.train.size), torch.zeros(negs.size)])))
            # One forward/backward pass per update step, each stepping only its groups (as the
            # client does per batch); the same samples in every pass.
            for groups in updater.steps:
                loss = 0.0
                for u, (items, labels) in zip(batch, samples):
                    model = models[u]
                    logits = model(items)
                    loss = loss + F.binary_cross_entropy_with_logits(logits, labels) + model.regularization(items)
                updater.zero_grad(batch)
                loss.backward()
                updater.step(groups, batch)
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
        centralised row), ``centralised-lr`` and ``centralised-trainer`` set the centralised
        training (with the run's private-group optimiser overrides and weight decay under the
        ``"groups"`` trainer; ``"best"`` trains both trainers and keeps the validation-better).
    data : FederatedData
        The run's split.

    Returns
    -------
    dict
        ``{"mostpop": {"test": ..., "valid": ...}, "centralised": {"test", "valid",
        "best_epoch", "seconds", "epochs", "lr", "trainer"[, "private"][, "candidates"]}}``
        (``centralised`` absent when skipped; ``trainer``: the one that trained this row;
        ``private``: ``group -> [optimizer, lr, weight decay, clip]`` of the ``"groups"``
        trainer; ``candidates`` under ``"best"``: ``trainer -> {"best_epoch", "valid"}``, the
        validation select-metric of each).
        The centralised row is cached under ``<cache>/reference/`` keyed by everything it
        depends on, so runs of several methods on one backbone train it once.
    """
    protocols, topk = cfg.local.protocols, cfg.local.topk
    mp = mostpop(data, cfg.seed, topk, protocols, cfg.local.num_eval_negatives)
    out: dict = {"mostpop": {"test": split_metrics(mp, "test"), "valid": split_metrics(mp, "valid")}}
    if cfg.centralised_epochs <= 0:
        return out
    trainers = TRAINERS if cfg.centralised_trainer == "best" else (cfg.centralised_trainer,)
    rows = {t: _centralised_row(cfg, data, t, log) for t in trainers}
    key = cfg.select_metric.removeprefix("valid_")
    trainer = max(trainers, key=lambda t: rows[t]["valid"][key])  # a tie keeps the first
    row = dict(rows[trainer])
    if len(trainers) > 1:
        row["candidates"] = {t: {"best_epoch": r["best_epoch"], "valid": r["valid"][key]}
                             for t, r in rows.items()}
    out["centralised"] = row
    return out


#: The trainers ``centralised-trainer = "best"`` trains, in order of preference on a tie.
TRAINERS: tuple[str, ...] = ("groups", "adam")


def _centralised_row(cfg, data: FederatedData, trainer: str,
                     log: Callable[[str], None] | None = None) -> dict:
    """The centralised row of ``cfg`` trained with ``trainer`` ("groups" or "adam"), read from
    or written to the cache under ``<cache>/reference/``."""
    import hashlib
    import json
    import os
    from pathlib import Path

    from fedmm.data.split import default_cache_dir
    from fedmm.factory import model_for

    protocols, topk = cfg.local.protocols, cfg.local.topk
    stamp = {"v": 1, "dataset": cfg.dataset, "thr": cfg.rating_threshold, "min": cfg.min_interactions,
             "users": data.num_users, "items": data.num_items, "train": data.num_train,
             "backbone": cfg.backbone, "dim": cfg.embedding_dim, "seed": cfg.seed,
             "negatives": cfg.local.num_negatives, "eval-negatives": cfg.local.num_eval_negatives,
             "topk": list(topk), "protocols": list(protocols), "select": cfg.select_metric,
             "epochs": cfg.centralised_epochs, "lr": cfg.centralised_lr}
    # Added keys only where they differ from what every earlier row was made with, so those
    # rows keep their keys: the split's tie rule, and same-init (private parts' initial values).
    if cfg.split_ties != "item-id":
        stamp["ties"] = cfg.split_ties
    if cfg.same_init:
        stamp["same-init"] = True
    # The "adam" trainer is the one of stamp v1, bit for bit (same RNG draws in the same order),
    # so its rows keep their v1 keys; the "groups" trainer adds what it depends on.
    settings = CentralSettings(epochs=cfg.centralised_epochs, lr=cfg.centralised_lr,
                               num_negatives=cfg.local.num_negatives, trainer=trainer,
                               overrides=cfg.local.optimizers, weight_decay=cfg.local.weight_decay)
    private: dict = {}
    if trainer == "groups":  # what the private groups train with, as resolved
        private = {g: [o.name, o.lr, o.weight_decay, o.clip] for g, o in
                   private_optimizers(model_for(cfg, data.num_items, 0), settings.overrides).items()}
        stamp.update({"v": 2, "trainer": trainer, "private": private,
                      "weight-decay": cfg.local.weight_decay})
    key = hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    path = root / "reference" / f"centralised-{key}.json"
    if path.is_file():
        return {"trainer": trainer, **json.loads(path.read_text())}
    tagged = None if log is None else (lambda m: log(f"[{trainer}] {m}"))
    row = centralised(data, lambda u: model_for(cfg, data.num_items, u, data.user(u).train), settings,
                      cfg.seed, topk, protocols, cfg.select_metric, cfg.local.num_eval_negatives, tagged)
    row.update({"epochs": cfg.centralised_epochs, "lr": cfg.centralised_lr,
                "trainer": trainer, **({"private": private} if private else {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, path)
    return row
