"""GFMFR client: the backbone's local training plus preference-guided distillation.

GFMFR (Zhang et al., "Multimodal-enhanced Federated Recommendation: A Group-wise Fusion
Approach", WWW 2026) fuses item modalities on the server into group-specific item features
``Q_l`` and turns them into a per-item preference of the client's group,
``E_M_l = P̄_l(Q_l)`` (``P̄_l``: the group's averaged prediction function). The client adds

    lambda * KL(E_M_l || own prediction)

to its BCE loss, where both distributions are Bernoulli over "interacts / does not":
``[1 - p, p]``. The KL runs over the items of each batch (positives and sampled negatives;
train-config ``gfmfr-kl-items = "batch"``, the default) or over the whole catalogue at every
batch (``"all"``: unobserved items are pulled towards the group's preference too).

Which part of the prediction function ``P_u`` leaves the client (:func:`scorer_plan`):

* **server mode** (PFedRec, FedRAP): ``P_u`` is a personalised score function (``score_fn``)
  without a user embedding. GFMFR requires it on the server (clustering and ``P̄_l``), so the
  client uploads it after local training as ``extras["scorer/<key>"]`` (with Laplace noise
  when ``ldp-delta > 0``, like every other upload). The server sends ``E_M_l`` as a compact
  ``(N, 2)`` array ``"preference"``.
* **client mode** (FedMF, FedNCF, FedPerGNN): the scorer needs the private user embedding
  ``user_emb``, which never leaves the client. Nothing is uploaded besides the usual shared
  parameters; the server clusters on the shared scorer parts the client uploads anyway
  (FedNCF ``mlp.*``/``output.*``, FedPerGNN ``gnn.*``; for FedMF, whose scorer has no shared
  part, on the item-table update) and sends ``Q_l`` (``"features"``, float16 ``(N, d)``) with
  the group-averaged shared scorer parts (``"scorer/<key>"``). The client computes
  ``E_M_l`` itself: its own model, with the group's shared scorer parts and its own user
  embedding, applied to ``Q_l``.

Metrics added to the train reply: ``rec-loss`` (mean batch BCE, always) and ``dis-loss``
(mean batch KL, only when the message carried a group signal).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clients.base import FedRecClient
from fedmm.models.base import FedRecModel
from fedmm.protocol import (DIS_LOSS, FEATURES, GFMFR_PAYLOAD, KL_ITEMS, PREFERENCE, REC_LOSS,
                            ROUND_LAMBDA, SCORER_PREFIX)

#: Values of the train-config key ``gfmfr-kl-items``.
KL_ITEM_MODES = ("batch", "all")

#: State-dict prefixes of private user representations: never uploaded by GFMFR.
USER_PREFIXES = ("user_emb",)


@dataclass(frozen=True)
class ScorerPlan:
    """How a backbone's prediction function ``P_u`` takes part in GFMFR.

    Attributes
    ----------
    upload : tuple of str
        Private scorer keys the client uploads as ``extras["scorer/<key>"]`` (server mode).
    shared : tuple of str
        Scorer keys that are shared parameters (already in the ``"arrays"`` upload).
    user : tuple of str
        Private user-embedding keys of the scorer; they never leave the client.
    """

    upload: tuple[str, ...]
    shared: tuple[str, ...]
    user: tuple[str, ...]

    @property
    def mode(self) -> str:
        """``"server"`` when the server can apply ``P̄_l`` itself, else ``"client"``."""
        return "client" if self.user else "server"


def scorer_plan(model: FedRecModel) -> ScorerPlan:
    """Split ``model.scorer_keys()`` into uploaded, shared and user-private parts.

    Parameters
    ----------
    model : FedRecModel
        Any backbone instance.

    Returns
    -------
    ScorerPlan
        With a private user embedding in the scorer (``user_emb*``), nothing private is
        uploaded (client mode); otherwise the private scorer keys are uploaded (server mode).

    Raises
    ------
    ValueError
        If the backbone declares no scorer keys (GFMFR cannot cluster it).
    """
    scorer = model.scorer_keys()
    if not scorer:
        raise ValueError(f"{type(model).__name__} declares no prediction-function parameters "
                         "(scorer_prefixes); GFMFR needs them to group clients")
    shared = set(model.shared_keys())
    user = tuple(k for k in scorer if k not in shared and k.startswith(USER_PREFIXES))
    private = tuple(k for k in scorer if k not in shared and k not in user)
    return ScorerPlan(upload=() if user else private,
                      shared=tuple(k for k in scorer if k in shared), user=user)


def preference_kl(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(target || [1 - sigmoid(z), sigmoid(z)])`` over a batch.

    Parameters
    ----------
    target : torch.Tensor
        float ``(batch, 2)``: the group preference ``[1 - p, p]`` of each batch item.
    logits : torch.Tensor
        float ``(batch,)``: the client's own logits ``z`` for the same items.

    Returns
    -------
    torch.Tensor
        float scalar, ``>= 0``; zero when ``sigmoid(z) == p``. Its gradient with respect to
        ``z`` is ``(sigmoid(z) - p) / batch``.
    """
    if target.ndim != 2 or target.shape[1] != 2 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be (batch, 2) for {logits.shape[0]} logits, "
                         f"got {tuple(target.shape)}")
    t0, t1 = target[:, 0], target[:, 1]
    kl = (torch.xlogy(t0, t0) + torch.xlogy(t1, t1)
          - t0 * F.logsigmoid(-logits) - t1 * F.logsigmoid(logits))
    return kl.mean()


class GFMFRClient(FedRecClient):
    """A backbone client with GFMFR's distillation term (see module docstring).

    Parameters
    ----------
    model, data, settings
        As :class:`~clients.base.FedRecClient`.
    """

    def __init__(self, model, data, settings) -> None:
        super().__init__(model, data, settings)
        self.plan = scorer_plan(model)
        self._target: torch.Tensor | None = None       # (N, 2) group preference
        self._features: dict[str, np.ndarray] | None = None  # client mode, pending
        self._scorer_upload: dict[str, np.ndarray] = {}
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._rec_sum, self._dis_sum = 0.0, 0.0
        self._rec_batches, self._dis_batches = 0, 0

    # ----- hooks ----------------------------------------------------------------------------
    def receive(self, payload: dict[str, dict[str, np.ndarray]], config: dict) -> None:
        """Take the group signal from ``payload["gfmfr"]`` (absent: no distillation).

        Parameters
        ----------
        payload : dict
            Array records of the message by name (``"gfmfr"`` with ``"preference"`` float32
            ``(N, 2)``, or ``"features"`` ``(N, d)`` plus ``"scorer/<key>"`` arrays).
        config : dict
            The message's config (``gfmfr-lambda-t`` is read per batch in :meth:`extra_loss`).
        """
        self._target, self._features = None, None
        record = payload.get(GFMFR_PAYLOAD)
        if record is None:
            return
        n, d = self.data.num_items, self.model.dim
        if PREFERENCE in record:
            pref = np.asarray(record[PREFERENCE], dtype=np.float32)
            if pref.shape != (n, 2):
                raise ValueError(f"'{GFMFR_PAYLOAD}/{PREFERENCE}' has shape {pref.shape}, expected "
                                 f"({n}, 2); server and client disagree on the dataset")
            self._target = torch.as_tensor(pref, device=self.device)
        elif FEATURES in record:
            if not self.plan.user:
                raise ValueError(f"'{GFMFR_PAYLOAD}/{FEATURES}' was sent to a {type(self.model).__name__} "
                                 f"client, whose scorer has no user embedding: expected "
                                 f"'{GFMFR_PAYLOAD}/{PREFERENCE}'")
            if tuple(record[FEATURES].shape) != (n, d):
                raise ValueError(f"'{GFMFR_PAYLOAD}/{FEATURES}' has shape {record[FEATURES].shape}, "
                                 f"expected ({n}, {d}); check dataset and embedding-dim")
            expected = {SCORER_PREFIX + k for k in self.plan.shared}
            got = {k for k in record if k.startswith(SCORER_PREFIX)}
            if got != expected:
                raise ValueError(f"'{GFMFR_PAYLOAD}' scorer arrays {sorted(got)} differ from the "
                                 f"backbone's shared scorer parts {sorted(expected)}")
            self._features = dict(record)
        else:
            raise ValueError(f"ArrayRecord '{GFMFR_PAYLOAD}' holds {sorted(record)}; expected "
                             f"'{PREFERENCE}' or '{FEATURES}'")

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        """Base local training (with :meth:`extra_loss`), then ``rec-loss``/``dis-loss`` metrics
        and, in server mode, the trained ``P_u`` to upload."""
        self._reset_stats()
        params, num_examples, metrics = super().fit(parameters, config)
        metrics[REC_LOSS] = self._rec_sum / max(self._rec_batches, 1)
        if self._dis_batches:
            metrics[DIS_LOSS] = self._dis_sum / self._dis_batches
        self._scorer_upload = self._scorer_arrays(int(config.get("server-round", 0)))
        return params, num_examples, metrics

    def extra_loss(self, items: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
                   config: dict) -> torch.Tensor | None:
        """``lambda * KL(E_M_l[items] || own)`` (``gfmfr-kl-items = "all"``: over every item, with
        this batch's parameters); ``None`` without a signal or with ``lambda == 0``.

        Parameters
        ----------
        items : torch.Tensor
            int64 ``(batch,)``.
        labels : torch.Tensor
            float ``(batch,)`` in {0, 1}.
        logits : torch.Tensor
            float ``(batch,)``, with gradient.
        config : dict
            ``gfmfr-lambda-t`` (float, default 0), ``gfmfr-kl-items`` (default ``"batch"``).

        Raises
        ------
        ValueError
            ``gfmfr-kl-items`` is not one of :data:`KL_ITEM_MODES`.
        """
        if self._target is None and self._features is not None:
            self._target = self._client_side_preference()
        with torch.no_grad():
            self._rec_sum += float(F.binary_cross_entropy_with_logits(logits, labels))
        self._rec_batches += 1
        if self._target is None:
            return None
        mode = str(config.get(KL_ITEMS, "batch"))
        if mode == "batch":
            kl = preference_kl(self._target[items], logits)
        elif mode == "all":
            every = torch.arange(self.data.num_items, device=self.device)
            kl = preference_kl(self._target, self.model(every))
        else:
            raise ValueError(f"train config '{KL_ITEMS}' = {mode!r}; expected one of "
                             f"{list(KL_ITEM_MODES)}")
        self._dis_sum += float(kl.detach())
        self._dis_batches += 1
        lam = float(config.get(ROUND_LAMBDA, 0.0))
        return lam * kl if lam > 0 else None

    def upload_extras(self) -> dict[str, np.ndarray]:
        """Base extras (``item-counts``) plus ``scorer/<key>`` (server mode)."""
        return {**super().upload_extras(), **self._scorer_upload}

    # ----- helpers --------------------------------------------------------------------------
    def _scorer_arrays(self, server_round: int) -> dict[str, np.ndarray]:
        """Trained private score function ``P_u`` (server mode), Laplace-noised like the shared
        upload when ``ldp-delta > 0``; empty in client mode."""
        if not self.plan.upload:
            return {}
        state = self.model.state_dict()
        arrays = [state[k].detach().cpu().numpy().copy() for k in self.plan.upload]
        if self.settings.ldp_delta > 0:
            from fedmm.privacy import laplace_noise

            rng = np.random.default_rng([self.settings.seed, server_round, self.data.user, 1])
            arrays = laplace_noise(arrays, self.settings.ldp_delta, rng)
        return {SCORER_PREFIX + k: a for k, a in zip(self.plan.upload, arrays)}

    def _client_side_preference(self) -> torch.Tensor:
        """Client mode: ``[1 - p, p]`` with ``p = sigmoid(score(Q_l))`` from a copy of this
        model holding the group's shared scorer parts and this user's own embedding.

        Called lazily (first batch of the round), after the global shared parameters are set.

        Returns
        -------
        torch.Tensor
            float32 ``(N, 2)`` on the client's device, no gradient.
        """
        assert self._features is not None
        group_model = copy.deepcopy(self.model).eval()
        state = group_model.state_dict()
        with torch.no_grad():
            for k in self.plan.shared:
                arr = self._features[SCORER_PREFIX + k]
                if tuple(arr.shape) != tuple(state[k].shape):
                    raise ValueError(f"'{GFMFR_PAYLOAD}/{SCORER_PREFIX}{k}' has shape {arr.shape}, model "
                                     f"expects {tuple(state[k].shape)}")
                state[k].copy_(torch.as_tensor(arr))
            q = torch.as_tensor(np.asarray(self._features[FEATURES], dtype=np.float32),
                                device=self.device)
            logits = group_model.score_vectors(q).float()
            target = torch.stack([torch.sigmoid(-logits), torch.sigmoid(logits)], 1)
        self._features = None
        return target.detach()
