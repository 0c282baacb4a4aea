"""Local training and evaluation of one user's model, as a Flower ``NumPyClient``.

The NumPyClient contract is kept exactly (``get_parameters``/``fit``/``evaluate`` on lists of
numpy arrays), so the class is reusable with any Flower driver. fedmm drives it from
Message-API handlers (:mod:`fedmm.client_app`), which also persist :meth:`private_state` in
``context.state`` between rounds.

Hooks for the method clients (GFMFR, FedSLLM):

* :meth:`receive` — method-specific payload from the server message (arrays by name);
* :meth:`training_positives` — which of the user's training positives to train on this round;
* :meth:`extra_loss` — a term added to the per-batch loss;
* :meth:`upload_extras` — method-specific arrays to send back besides the shared parameters
  (integer counts go through :meth:`noisy_counts`).

Upload privacy (:mod:`fedmm.privacy`): ``pad-items`` pads the item table with pseudo
interactions, then ``ldp-delta`` adds Laplace noise to every uploaded float and geometric noise
to every uploaded count.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from flwr.client import NumPyClient

from fedmm.config import LocalSettings
from fedmm.data.sampling import eval_negatives, sample_negatives
from fedmm.data.split import UserData
from fedmm.device import resolve_device, seed_torch
from fedmm.metrics import leave_one_out_metrics
from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupedOptimizer, resolve_optimizers
from fedmm.privacy import count_noise, laplace_noise, pad_item_updates
from fedmm.protocol import FRESH_PREFIX, ITEM_COUNTS, ITEM_TABLE_KEY, TRAIN_LOSS

#: RNG stream tags (4th seed word) of the upload's privacy draws, apart from training's stream.
_COUNT_STREAM, _PAD_STREAM = 2, 3


class FedRecClient(NumPyClient):
    """One user's client: BCE with sampled negatives, ``local-epochs`` passes per round, each
    batch stepped with the backbone's per-group optimisers in its update steps
    (:mod:`fedmm.models.optim`; run-config ``<group>-optimizer`` / ``<group>-lr`` override them).

    Parameters
    ----------
    model : FedRecModel
        This user's model (private parts already restored if any).
    data : UserData
        This user's own interactions.
    settings : LocalSettings
    """

    def __init__(self, model: FedRecModel, data: UserData, settings: LocalSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.model = model.to(self.device)
        self.data = data
        self._shared_keys = model.shared_keys()
        self._private_keys = model.private_keys()
        #: int64 (N,) training samples per item of the last fit (item-wise aggregation only).
        self._item_counts: np.ndarray | None = None
        self._round = 0                          # server round of the last fit

    # ----- parameters -----------------------------------------------------------------------
    @property
    def shared_keys(self) -> list[str]:
        return self._shared_keys

    def get_parameters(self, config: dict) -> list[np.ndarray]:
        state = self.model.state_dict()
        return [state[k].detach().cpu().numpy().copy() for k in self._shared_keys]

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        if len(parameters) != len(self._shared_keys):
            raise ValueError(f"expected {len(self._shared_keys)} shared arrays {self._shared_keys}, "
                             f"got {len(parameters)}; server and client disagree on the backbone")
        state = self.model.state_dict()
        for k, arr in zip(self._shared_keys, parameters):
            if tuple(arr.shape) != tuple(state[k].shape):
                raise ValueError(f"shared array '{k}' has shape {tuple(arr.shape)}, model expects "
                                 f"{tuple(state[k].shape)}; check dataset/embedding-dim match the server")
            state[k].copy_(torch.as_tensor(arr))

    def private_state(self) -> dict[str, np.ndarray]:
        """Private parameters to persist on the client between rounds."""
        state = self.model.state_dict()
        return {k: state[k].detach().cpu().numpy().copy() for k in self._private_keys}

    def load_private_state(self, arrays: dict[str, np.ndarray]) -> None:
        state = self.model.state_dict()
        for k in self._private_keys:
            if k in arrays:
                state[k].copy_(torch.as_tensor(arrays[k]))

    # ----- hooks ----------------------------------------------------------------------------
    def receive(self, payload: dict[str, np.ndarray], config: dict) -> None:
        """Method-specific payload from the server (base: nothing expected)."""

    def training_positives(self, config: dict) -> np.ndarray:
        """Positives to train on this round (base: all training positives)."""
        return self.data.train

    def extra_loss(self, items: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor,
                   config: dict) -> torch.Tensor | None:
        """Term added to the batch loss (base: none)."""
        return None

    def upload_extras(self) -> dict[str, np.ndarray]:
        """Arrays sent back besides the shared parameters: ``item-counts`` int64 ``(N,)`` (how
        many training samples touched each item, padded items included, count-noised under
        ``ldp-delta``) when the server asked for item-wise aggregation."""
        counts = self._item_counts
        return {} if counts is None else {ITEM_COUNTS: self.noisy_counts(counts, _COUNT_STREAM)}

    def noisy_counts(self, counts: np.ndarray, stream: int) -> np.ndarray:
        """``counts`` (int, any shape) with :func:`~fedmm.privacy.count_noise` of scale
        ``ldp-delta`` (unchanged when it is 0), drawn from the seeded stream ``(seed, round of
        the last fit, user, stream)``: the same counts on every call of one round."""
        if self.settings.ldp_delta == 0:
            return counts
        rng = np.random.default_rng([self.settings.seed, self._round,
                                     self.data.user, stream])
        return count_noise(counts, self.settings.ldp_delta, rng)

    # ----- training -------------------------------------------------------------------------
    def optimizer(self) -> GroupedOptimizer:
        """This round's optimisers: the backbone's defaults with the run-config overrides."""
        overrides = {g: (name, lr) for g, name, lr in self.settings.optimizers}
        optims = resolve_optimizers(self.model.default_optimizers(), overrides)
        return GroupedOptimizer(self.model.param_groups(), optims, self.model.update_steps,
                                self.settings.weight_decay)

    def _rng(self, server_round: int) -> np.random.Generator:
        return np.random.default_rng([self.settings.seed, server_round, self.data.user])

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        self.set_parameters(parameters)
        server_round = int(config.get("server-round", 0))
        self._round = server_round
        self.model.set_round(server_round)
        rng = self._rng(server_round)
        seed_torch(int(rng.integers(2**31)))
        positives = np.asarray(self.training_positives(config), dtype=np.int64)
        s = self.settings
        optim = self.optimizer()
        self.model.train()
        n_pos = positives.size
        total, batches = 0.0, 0
        counts = np.zeros(self.data.num_items, dtype=np.int64)
        for _ in range(s.local_epochs):
            negs = sample_negatives(self.data.num_items, self.data.train, n_pos * s.num_negatives, rng)
            items = np.concatenate([positives, negs])
            labels = np.concatenate([np.ones(n_pos, np.float32), np.zeros(negs.size, np.float32)])
            counts += np.bincount(items, minlength=self.data.num_items)
            perm = rng.permutation(items.size)
            items_t = torch.as_tensor(items[perm], device=self.device)
            labels_t = torch.as_tensor(labels[perm], device=self.device)
            for start in range(0, items.size, s.batch_size):
                bi, bl = items_t[start:start + s.batch_size], labels_t[start:start + s.batch_size]
                for i, groups in enumerate(optim.steps):
                    logits = self.model(bi)
                    loss = F.binary_cross_entropy_with_logits(logits, bl) + self.model.regularization(bi)
                    extra = self.extra_loss(bi, bl, logits, config)
                    if extra is not None:
                        loss = loss + extra
                    optim.zero_grad()
                    loss.backward()
                    optim.step(groups)
                    if i == 0:  # the loss before this batch's updates
                        total += float(loss.detach())
                batches += 1
        self._item_counts = counts if config.get("aggregation") == "itemwise" else None
        params = self.get_parameters({})
        fresh = ({FRESH_PREFIX + k: v for k, v in self.ranking()[1].items()}
                 if s.train_eval else {})
        if s.pad_items > 0:  # before the noise: padded rows are noised like every other row
            t = self._shared_keys.index(ITEM_TABLE_KEY)
            pad_rng = np.random.default_rng([s.seed, server_round, self.data.user, _PAD_STREAM])
            params[t], _, self._item_counts = pad_item_updates(
                parameters[t], params[t], self.data.interacted, s.pad_items, pad_rng, self._item_counts)
        if s.ldp_delta > 0:
            params = laplace_noise(params, s.ldp_delta, rng)
        num_examples = int(n_pos * (1 + s.num_negatives))
        # No positive count or user id in the reply (num-examples, the FedAvg weight, is the
        # only size the server needs; docs/privacy.md).
        return params, num_examples, {TRAIN_LOSS: total / max(batches, 1), **fresh}

    # ----- evaluation -----------------------------------------------------------------------
    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        self.set_parameters(parameters)
        loss, metrics = self.ranking()
        return loss, 1, metrics

    def ranking(self) -> tuple[float, dict[str, float]]:
        """Leave-one-out metrics of the model as it is now (validation and test item against
        the user's fixed sampled negatives and/or the full catalogue) and the monitoring BCE."""
        self.model.eval()
        s, d = self.settings, self.data
        with torch.no_grad():
            scores = self.model.full_scores().float().cpu().numpy()
        negs = eval_negatives(d.user, d.num_items, d.interacted, s.num_eval_negatives, s.seed)
        metrics = leave_one_out_metrics(scores, d.train, d.valid, d.test, negs, s.topk, s.protocols)
        # BCE of the two held-out positives against the sampled negatives, for monitoring.
        items = np.concatenate([[d.valid, d.test], negs])
        labels = np.concatenate([[1.0, 1.0], np.zeros(negs.size)])
        logits = torch.as_tensor(scores[items], dtype=torch.float64)
        loss = float(F.binary_cross_entropy_with_logits(logits, torch.as_tensor(labels)))
        return loss, metrics
