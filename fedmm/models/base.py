"""The one contract every federated-recommendation backbone follows.

One model instance is the model of ONE client, i.e. of one user (every user is a client).
It holds:

* the shared item table ``item_emb`` (``nn.Embedding(num_items, dim)``), always shared, always
  named ``item_emb`` so GFMFR (group targets) and FedSLLM (initialisation / alignment) can find it;
* other shared parameters (e.g. FedNCF's MLP) listed by :meth:`shared_keys`;
* private parameters (user embedding, personalised score function, FedRAP's local item table),
  which never leave the client; they are every state-dict key not in :meth:`shared_keys`.

Scoring is split in two so that vectors that are not rows of the item table can be scored
(GFMFR's group features, FedSLLM's prototype embeddings):

* :meth:`item_vectors` maps item ids to the vectors the scorer consumes, shape ``(batch, dim)``;
* :meth:`score_vectors` maps such vectors to logits, shape ``(batch,)``.

``forward(items) == score_vectors(item_vectors(items))`` and :meth:`full_scores` scores the
whole catalogue. Probabilities are ``sigmoid(logit)``; the loss is BCE-with-logits on implicit
feedback plus the backbone's own :meth:`regularization`.

No Flower import here: models are used alone by tests and server-side tasks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from fedmm.models.optim import GROUPS, GroupOptim


class FedRecModel(nn.Module, ABC):
    """Base class of a single-user federated recommender.

    Parameters
    ----------
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d``.
    """

    #: Prefixes of state-dict keys that are shared (uploaded and aggregated). Subclasses extend.
    shared_prefixes: tuple[str, ...] = ("item_emb.",)
    #: Prefixes of the parameters that form the prediction (score) function ``P_u`` —
    #: what GFMFR clusters clients by. May overlap with shared or private keys.
    scorer_prefixes: tuple[str, ...] = ()
    #: Update steps of local training: each is one forward/backward pass per batch that steps
    #: only the named parameter groups (see :mod:`fedmm.models.optim`). Default: one joint step.
    update_steps: ClassVar[tuple[tuple[str, ...], ...]] = (GROUPS,)

    def __init__(self, num_items: int, dim: int = 32) -> None:
        super().__init__()
        if num_items <= 0 or dim <= 0:
            raise ValueError(f"num_items and dim must be positive, got {num_items=} {dim=}")
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.item_emb = nn.Embedding(self.num_items, self.dim)

    # ----- parameter split ------------------------------------------------------------------
    def shared_keys(self) -> list[str]:
        """State-dict keys that travel to the server, in a fixed (sorted) order."""
        return sorted(k for k in self.state_dict() if k.startswith(self.shared_prefixes))

    def private_keys(self) -> list[str]:
        """State-dict keys that stay on the client, in a fixed (sorted) order."""
        shared = set(self.shared_keys())
        return sorted(k for k in self.state_dict() if k not in shared)

    def scorer_keys(self) -> list[str]:
        """State-dict keys of the prediction function ``P_u`` (sorted)."""
        return sorted(k for k in self.state_dict() if k.startswith(self.scorer_prefixes))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group: ``items`` (the shared item table), ``local_items`` (a private
        item table, ``item_local``), ``shared`` (other shared layers), ``private`` (the rest),
        each in state-dict order; a group may be empty."""
        shared = set(self.shared_keys())
        groups: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
        for name, param in self.named_parameters():
            if name.startswith("item_emb."):
                groups["items"].append(param)
            elif name.startswith("item_local."):
                groups["local_items"].append(param)
            elif name in shared:
                groups["shared"].append(param)
            else:
                groups["private"].append(param)
        return groups

    @abstractmethod
    def default_optimizers(self) -> dict[str, GroupOptim]:
        """The backbone's default local optimiser of each non-empty parameter group, from its
        paper's official code where one exists (the one place these defaults live)."""

    # ----- scoring --------------------------------------------------------------------------
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors fed to the scorer; default: the item rows ``v_i``.
        ``items``: int64 ``(batch,)`` -> float ``(batch, dim)``."""
        return self.item_emb(items)

    @abstractmethod
    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits of this client's user for arbitrary item vectors: ``(batch, dim)`` -> ``(batch,)``."""

    def _check_vectors(self, vectors: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``vectors`` has shape ``(batch, dim)``."""
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} scores vectors of shape (batch, {self.dim}), "
                f"got {tuple(vectors.shape)}"
            )

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Logits for item ids: int64 ``(batch,)`` -> float ``(batch,)``."""
        return self.score_vectors(self.item_vectors(items))

    @torch.no_grad()
    def full_scores(self) -> torch.Tensor:
        """Logits for every item of the catalogue, float ``(num_items,)``."""
        items = torch.arange(self.num_items, device=self.item_emb.weight.device)
        return self.forward(items)

    def regularization(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone-specific penalty added to the BCE loss (scalar); zero by default.

        Parameters
        ----------
        items : torch.Tensor or None, default None
            int64 ``(batch,)`` ids of the current batch. Backbones whose penalty is a sum over
            item rows (FedRAP) restrict it to these rows; ``None`` means the whole catalogue.
            Trainers should pass the batch: it keeps per-item penalties from moving rows the
            batch has no data for (with Adam, a tiny penalty gradient becomes a full-size step).
        """
        return self.item_emb.weight.new_zeros(())

    def set_round(self, server_round: int) -> None:
        """Told the current server round before local training (for schedules); no-op by default."""
