"""FedSLLM client: scores its training positives with the round's global model and trains on
the top-``S`` fraction only.

Paper: "LLM-Derived Semantic Prototypes for Sample Selection in Federated Recommendation"
(FedSLLM). After the round's shared parameters are loaded (``FedRecClient.fit`` calls
``set_parameters`` before :meth:`FedSLLMClient.training_positives`), the client computes the
logits ``r_ui`` of its ``n`` training positives and, for the prototype samplers, the logits
``r_uj`` of the ``P`` prototype embeddings sent by the server, then selects with
:func:`clients.selection.select_samples` (rule and tie conventions documented there):

* ``fedsllm`` / ``cluster``: ``Score(i) = min_j sim(i, j) / (div(i, j) + eps)``, top ``S``,
  with ``sim = (cos + 1) / 2`` and ``div = |sigmoid(r_ui) - sigmoid(r_uj)|`` (``fedsllm-score =
  "probability"``, default) or raw ``cos`` and logits (``"literal"``); the counts
  ``c_u[j] = #{i : argmin_j s(i, j) = j}`` over all ``n`` positives are uploaded;
* ``random``, ``entropy``, ``margin``, ``least-confidence``: on ``sigmoid(r_ui)``, no payload;
* ``fedselect``: drawn by the momentum meta-margin of the per-positive BCE loss (loss before
  minus after local training), which the client keeps in its private state and updates after
  training (one extra scoring pass over its positives);
* ``fale``: drawn by the leverage scores of the positives' scorer vectors
  (``model.item_vectors``);
* ``base``: every positive.

Coverage bookkeeping (diagnostic, stays on the client except two floats): the private state
keeps a mask of the positives selected in any earlier round this client was sampled in, and
``fit`` reports ``selection-coverage`` (share of its positives selected at least once so far,
this round included) and, from its second round on, ``selection-repeat`` (share of this
round's selection that was already selected in any earlier round). Random selection at ``S``
gives a repeat near the coverage before the round, ``1 - (1 - S)^k`` after ``k`` earlier rounds;
a sampler that keeps picking the same positives gives a repeat near 1 and a coverage near ``S``.

Two more diagnostics per round: ``selection-p-selected`` and ``selection-p-all``, the mean
predicted probability ``sigmoid(r_ui)`` (under the round's global model, before training) of
the selected positives and of all of them (how "hard" the selection is), and
``selection-positive-share``, the share of positives among the training examples (fixed at
``1 / (1 + num-negatives)``: only positives are selected, negatives are drawn fresh).

Selection pool of the prototype samplers (``fedsllm-pool``): ``"unseen"`` ranks only the
positives not used in the client's current pass (kept in the private state under
``fedsllm.pass-used``), so a pass trains on every positive once in score order, then starts
over (:func:`clients.selection.select_top_unseen`); ``"all"`` ranks all of them every round.

Negatives are sampled as usual (``num-negatives`` per selected positive), so the number of
examples, hence the FedAvg weight, is that of the selected positives. The sampler, ``S`` and
``eps`` come from the train message's config (the server's ``fedsllm-*`` keys), so the
server alone decides them; the message contract is in :mod:`strategies.fedsllm`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from clients.base import FedRecClient, LocalSettings
from clients.selection import (PASS_METHODS, POOLS, PROTOTYPE_METHODS, SCORE_FORMS, Selection,
                               _sigmoid, fedselect_margin, positive_loss, select_samples)
from fedmm.data.split import UserData
from fedmm.models.base import FedRecModel
from fedmm.protocol import (EPS_CFG, FEDSLLM_PAYLOAD, FRACTION_CFG, POOL_CFG, PROTOTYPE_COUNTS,
                            PROTOTYPES, SAMPLER_CFG, SCORE_CFG, SIMILARITY)

#: Key, in the client's private state, of the uint8 ``(n,)`` mask of positives selected in any
#: earlier round (coverage bookkeeping; never uploaded).
SELECTED_EVER_KEY = "fedsllm.selected-ever"
#: Key, in the private state, of the uint8 ``(n,)`` mask of positives used in the current pass
#: of the ``fedsllm-pool = "unseen"`` rule (:func:`clients.selection.select_top_unseen`).
PASS_USED_KEY = "fedsllm.pass-used"
#: Keys, in the private state, of FedSelect's float32 ``(n,)`` per-positive loss after the
#: client's last local training and its momentum meta-margin (``fedselect`` only).
FEDSELECT_LOSS_KEY, FEDSELECT_MARGIN_KEY = "fedsllm.fedselect-loss", "fedsllm.fedselect-margin"
#: Stream tag of the ``random`` sampler's RNG (separate from the training RNG stream).
_RANDOM_STREAM = 7
#: Stream tag of the prototype counts' noise (``ldp-delta``; the base item counts use 2).
_COUNT_STREAM = 4


class FedSLLMClient(FedRecClient):
    """One user's FedSLLM client (see the module docstring).

    Parameters
    ----------
    model : FedRecModel
    data : UserData
    settings : LocalSettings

    Attributes
    ----------
    prototypes : numpy.ndarray or None
        float32 ``(P, d)`` prototype embeddings of this round's message.
    similarity : numpy.ndarray or None
        float32 ``(N, P)`` item-prototype cosine similarities of this round's message.
    selection : Selection or None
        The last selection (indices into ``data.train``, ``jstar``, ``counts``).
    """

    def __init__(self, model: FedRecModel, data: UserData, settings: LocalSettings) -> None:
        super().__init__(model, data, settings)
        self.prototypes: np.ndarray | None = None
        self.similarity: np.ndarray | None = None
        self.selection: Selection | None = None
        self._selection_ms = 0.0
        self._ever: np.ndarray | None = None   # bool (n,): selected in an earlier round
        self._repeat: float | None = None
        self._fs_loss: np.ndarray | None = None    # FedSelect: loss after last local training
        self._fs_margin: np.ndarray | None = None  # FedSelect: momentum meta-margin
        self._loss_now: np.ndarray | None = None   # per-positive loss at this round's selection
        self._pass_used: np.ndarray | None = None  # bool (n,): used in the current pass
        self._p_stats: tuple[float, float] | None = None  # mean p of selected / all positives

    # ----- private state: the parameters plus the selected-ever mask -------------------------
    def private_state(self) -> dict[str, np.ndarray]:
        """Private parameters plus ``fedsllm.selected-ever`` uint8 ``(n,)`` once selected."""
        state = super().private_state()
        if self._ever is not None:
            state[SELECTED_EVER_KEY] = self._ever.astype(np.uint8)
        if self._pass_used is not None:
            state[PASS_USED_KEY] = self._pass_used.astype(np.uint8)
        if self._fs_loss is not None:
            state[FEDSELECT_LOSS_KEY] = self._fs_loss.astype(np.float32)
            state[FEDSELECT_MARGIN_KEY] = self._fs_margin.astype(np.float32)
        return state

    def load_private_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the private parameters and the selected-ever mask.

        Raises
        ------
        ValueError
            The stored mask does not have one entry per training positive of this user.
        """
        super().load_private_state(arrays)
        n = self.data.train.size
        for key in (SELECTED_EVER_KEY, PASS_USED_KEY, FEDSELECT_LOSS_KEY, FEDSELECT_MARGIN_KEY):
            if key in arrays and arrays[key].shape != (n,):
                raise ValueError(f"private state '{key}' has shape {arrays[key].shape}, user "
                                 f"{self.data.user} has {n} training positives; "
                                 "the node state is from another dataset or split")
        if SELECTED_EVER_KEY in arrays:
            self._ever = np.asarray(arrays[SELECTED_EVER_KEY], dtype=bool)
        if PASS_USED_KEY in arrays:
            self._pass_used = np.asarray(arrays[PASS_USED_KEY], dtype=bool)
        if FEDSELECT_LOSS_KEY in arrays and FEDSELECT_MARGIN_KEY in arrays:
            self._fs_loss = np.asarray(arrays[FEDSELECT_LOSS_KEY], dtype=np.float64)
            self._fs_margin = np.asarray(arrays[FEDSELECT_MARGIN_KEY], dtype=np.float64)

    # ----- hooks ----------------------------------------------------------------------------
    def receive(self, payload: dict[str, dict[str, np.ndarray]], config: dict) -> None:
        """Keep the ``"fedsllm"`` record (prototype samplers); check its shapes.

        Raises
        ------
        ValueError
            The record lacks a key or its shapes disagree with the model and the catalogue.
        """
        record = payload.get(FEDSLLM_PAYLOAD)
        if record is None:
            self.prototypes = self.similarity = None
            return
        missing = [k for k in (PROTOTYPES, SIMILARITY) if k not in record]
        if missing:
            raise ValueError(f"ArrayRecord '{FEDSLLM_PAYLOAD}' lacks {missing}; the FedSLLM "
                             f"server sends '{PROTOTYPES}' (P, d) and '{SIMILARITY}' (N, P)")
        protos = np.asarray(record[PROTOTYPES], dtype=np.float32)
        sim = np.asarray(record[SIMILARITY], dtype=np.float32)
        if protos.ndim != 2 or protos.shape[0] == 0 or protos.shape[1] != self.model.dim:
            raise ValueError(f"'{FEDSLLM_PAYLOAD}/{PROTOTYPES}' has shape {protos.shape}, "
                             f"expected (P, {self.model.dim}) with P >= 1")
        if sim.shape != (self.data.num_items, protos.shape[0]):
            raise ValueError(f"'{FEDSLLM_PAYLOAD}/{SIMILARITY}' has shape {sim.shape}, expected "
                             f"(num_items, P) = ({self.data.num_items}, {protos.shape[0]})")
        self.prototypes, self.similarity = protos, sim

    def training_positives(self, config: dict) -> np.ndarray:
        """Select this round's positives with the current (just loaded) model.

        Returns
        -------
        numpy.ndarray
            int64 ``(k,)`` selected items, in their original (oldest-first) order, with
            ``k = max(1, floor(S * n))`` (``n`` for ``base``).
        """
        for key in (SAMPLER_CFG, FRACTION_CFG, EPS_CFG):
            if key not in config:
                raise ValueError(f"train config lacks '{key}'; the FedSLLM client needs the "
                                 f"FedSLLM strategy (method = \"fedsllm\") on the server")
        sampler = str(config[SAMPLER_CFG])
        fraction, eps = float(config[FRACTION_CFG]), float(config[EPS_CFG])
        positives = np.asarray(self.data.train, dtype=np.int64)
        start = time.perf_counter()
        if sampler == "base":
            selection = select_samples("base", np.zeros(positives.size), fraction)
        else:
            selection = self._select(sampler, positives, fraction, eps, config)
        self._selection_ms = (time.perf_counter() - start) * 1e3
        self.selection = selection
        chosen = np.zeros(positives.size, dtype=bool)
        chosen[selection.indices] = True
        before = self._ever
        self._repeat = None if before is None else float((chosen & before).sum() / chosen.sum())
        self._ever = chosen if before is None else (before | chosen)
        return positives[np.sort(selection.indices)]

    def _select(self, sampler: str, positives: np.ndarray, fraction: float, eps: float,
                config: dict) -> Selection:
        needs_protos = sampler in PROTOTYPE_METHODS
        if needs_protos and self.prototypes is None:
            raise ValueError(f"sampler '{sampler}' needs the ArrayRecord '{FEDSLLM_PAYLOAD}' "
                             f"(prototypes and similarities) in the train message; none came")
        score, pool = "probability", "all"
        if needs_protos:
            score = str(config.get(SCORE_CFG, ""))
            if score not in SCORE_FORMS:
                raise ValueError(f"train config key '{SCORE_CFG}' = {score!r}: sampler "
                                 f"'{sampler}' needs one of {list(SCORE_FORMS)} (the FedSLLM "
                                 "strategy sends it)")
            pool = str(config.get(POOL_CFG, "all"))
            if pool not in POOLS:
                raise ValueError(f"train config key '{POOL_CFG}' = {pool!r}: choose one of "
                                 f"{list(POOLS)}")
        features = None
        with torch.no_grad():
            r_items = self._logits(positives)
            r_protos = None
            if needs_protos:
                r_protos = self._scored(lambda: self.model.score_vectors(
                    torch.as_tensor(self.prototypes, device=self.device)))
            if sampler == "fale":
                features = self._scored(lambda: self.model.item_vectors(
                    torch.as_tensor(positives, device=self.device)))
        self._loss_now = positive_loss(r_items) if sampler == "fedselect" else None
        rng = np.random.default_rng([self.settings.seed, int(config.get("server-round", 0)),
                                     self.data.user, _RANDOM_STREAM])
        selection = select_samples(
            sampler, r_items, fraction, rng=rng, eps=eps, score=score,
            r_protos=r_protos, sim=None if not needs_protos else self.similarity[positives],
            margin=self._fs_margin if sampler == "fedselect" else None, features=features,
            pool=pool, used=(self._pass_used if pool == "unseen" or sampler in PASS_METHODS
                             else None))
        if selection.used is not None:
            self._pass_used = selection.used
        p = _sigmoid(np.asarray(r_items, dtype=np.float64))
        self._p_stats = (float(p[selection.indices].mean()) if selection.indices.size else 0.0,
                         float(p.mean()) if p.size else 0.0)
        return selection

    def _scored(self, fn) -> np.ndarray:
        """Run ``fn`` with the model in eval mode (deterministic: FedNCF has dropout) -> numpy."""
        was_training = self.model.training
        self.model.eval()
        try:
            return fn().float().cpu().numpy()
        finally:
            self.model.train(was_training)

    def _logits(self, positives: np.ndarray) -> np.ndarray:
        """float ``(n,)`` logits of ``positives`` under the current model, eval mode."""
        return self._scored(lambda: self.model(torch.as_tensor(positives, device=self.device)))

    def _update_fedselect(self) -> None:
        """After local training: the per-positive loss and FedSelect's momentum meta-margin."""
        with torch.no_grad():
            after = positive_loss(self._logits(np.asarray(self.data.train, dtype=np.int64)))
        before = self._fs_loss if self._fs_loss is not None else self._loss_now
        self._fs_margin = fedselect_margin(before, after, self._fs_margin)
        self._fs_loss = after

    def upload_extras(self) -> dict[str, np.ndarray]:
        """Base extras plus ``prototype-counts`` int64 ``(P,)`` for the prototype samplers
        (geometric noise clipped at 0 under ``ldp-delta``, :meth:`noisy_counts`)."""
        extras = super().upload_extras()
        if self.selection is not None and self.selection.counts is not None:
            extras[PROTOTYPE_COUNTS] = self.noisy_counts(self.selection.counts.astype(np.int64),
                                                         _COUNT_STREAM)
        return extras

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        """``FedRecClient.fit`` plus the metrics ``selection-ms``, ``selection-candidates``,
        ``selection-coverage`` and (from the client's second round) ``selection-repeat``."""
        params, num_examples, metrics = super().fit(parameters, config)
        if str(config.get(SAMPLER_CFG)) == "fedselect":
            self._update_fedselect()
        metrics = {**metrics, "selection-ms": float(self._selection_ms),
                   "selection-candidates": int(self.data.train.size),
                   # (positives: num-examples / (1 + num-negatives); train replies carry no count)
                   "selection-positive-share": (num_examples // (1 + self.settings.num_negatives))
                   / max(num_examples, 1)}
        if self._p_stats is not None and str(config.get(SAMPLER_CFG)) != "base":
            metrics["selection-p-selected"], metrics["selection-p-all"] = self._p_stats
        if self._ever is not None:
            metrics["selection-coverage"] = float(self._ever.mean())
        if self._repeat is not None:
            metrics["selection-repeat"] = self._repeat
        return params, num_examples, metrics
