"""FedSLLM client: scores its training positives with the round's global model and trains on
the top-``S`` fraction only.

Paper: "LLM-Derived Semantic Prototypes for Sample Selection in Federated Recommendation"
(FedSLLM). After the round's shared parameters are loaded (``FedRecClient.fit`` calls
``set_parameters`` before :meth:`FedSLLMClient.training_positives`), the client computes the
logits ``r_ui`` of its ``n`` training positives and, for the prototype samplers, the logits
``r_uj`` of the ``P`` prototype embeddings sent by the server, then selects with
:func:`clients.selection.select_samples` (rule and tie conventions documented there):

* ``fedsllm`` / ``cluster``: ``Score(i) = min_j sim(i, j) / (|r_ui - r_uj| + eps)``, top ``S``;
  the counts ``c_u[j] = #{i : argmin_j s(i, j) = j}`` over all ``n`` positives are uploaded;
* ``random``, ``entropy``, ``margin``, ``least-confidence``: on ``sigmoid(r_ui)``, no payload;
* ``base``: every positive.

Coverage bookkeeping (diagnostic, stays on the client except two floats): the private state
keeps a mask of the positives selected in any earlier round this client was sampled in, and
``fit`` reports ``selection-coverage`` (share of its positives selected at least once so far,
this round included) and, from its second round on, ``selection-repeat`` (share of this
round's selection that was already selected in any earlier round). Random selection at ``S``
gives a repeat near the coverage before the round, ``1 - (1 - S)^k`` after ``k`` earlier rounds;
a sampler that keeps picking the same positives gives a repeat near 1 and a coverage near ``S``.

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
from clients.selection import PROTOTYPE_METHODS, Selection, select_samples
from fedmm.data.split import UserData
from fedmm.models.base import FedRecModel
from fedmm.protocol import (EPS_CFG, FEDSLLM_PAYLOAD, FRACTION_CFG, PROTOTYPE_COUNTS,
                            PROTOTYPES, SAMPLER_CFG, SIMILARITY)

#: Key, in the client's private state, of the uint8 ``(n,)`` mask of positives selected in any
#: earlier round (coverage bookkeeping; never uploaded).
SELECTED_EVER_KEY = "fedsllm.selected-ever"
#: Stream tag of the ``random`` sampler's RNG (separate from the training RNG stream).
_RANDOM_STREAM = 7


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

    # ----- private state: the parameters plus the selected-ever mask -------------------------
    def private_state(self) -> dict[str, np.ndarray]:
        """Private parameters plus ``fedsllm.selected-ever`` uint8 ``(n,)`` once selected."""
        state = super().private_state()
        if self._ever is not None:
            state[SELECTED_EVER_KEY] = self._ever.astype(np.uint8)
        return state

    def load_private_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the private parameters and the selected-ever mask.

        Raises
        ------
        ValueError
            The stored mask does not have one entry per training positive of this user.
        """
        super().load_private_state(arrays)
        ever = arrays.get(SELECTED_EVER_KEY)
        if ever is None:
            return
        if ever.shape != (self.data.train.size,):
            raise ValueError(f"private state '{SELECTED_EVER_KEY}' has shape {ever.shape}, user "
                             f"{self.data.user} has {self.data.train.size} training positives; "
                             "the node state is from another dataset or split")
        self._ever = np.asarray(ever, dtype=bool)

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
        was_training = self.model.training
        self.model.eval()  # deterministic scores (FedNCF has dropout)
        try:
            with torch.no_grad():
                r_items = self.model(torch.as_tensor(positives, device=self.device))
                r_protos = None
                if needs_protos:
                    r_protos = self.model.score_vectors(
                        torch.as_tensor(self.prototypes, device=self.device))
        finally:
            self.model.train(was_training)
        rng = np.random.default_rng([self.settings.seed, int(config.get("server-round", 0)),
                                     self.data.user, _RANDOM_STREAM])
        return select_samples(
            sampler, r_items.float().cpu().numpy(), fraction, rng=rng, eps=eps,
            r_protos=None if r_protos is None else r_protos.float().cpu().numpy(),
            sim=None if not needs_protos else self.similarity[positives])

    def upload_extras(self) -> dict[str, np.ndarray]:
        """Base extras plus ``prototype-counts`` int64 ``(P,)`` for the prototype samplers."""
        extras = super().upload_extras()
        if self.selection is not None and self.selection.counts is not None:
            extras[PROTOTYPE_COUNTS] = self.selection.counts.astype(np.int64)
        return extras

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        """``FedRecClient.fit`` plus the metrics ``selection-ms``, ``selection-candidates``,
        ``selection-coverage`` and (from the client's second round) ``selection-repeat``."""
        params, num_examples, metrics = super().fit(parameters, config)
        metrics = {**metrics, "selection-ms": float(self._selection_ms),
                   "selection-candidates": int(self.data.train.size)}
        if self._ever is not None:
            metrics["selection-coverage"] = float(self._ever.mean())
        if self._repeat is not None:
            metrics["selection-repeat"] = self._repeat
        return params, num_examples, metrics
