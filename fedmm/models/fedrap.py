"""FedRAP: Li et al., "Federated Recommendation with Additive Personalization", ICLR 2024.

Each client's item embeddings are the sum of a global, shared table ``C`` (``item_emb``,
aggregated by the server) and a private, local table ``D_u`` (``item_local``):
``v_i = C_i + D_i``. The user is represented, as in the authors' code (``affine_output`` in
``model/model.py`` of github.com/mtics/FedRAP), by a private affine score function
``score_fn = Linear(dim, 1)``, ``logit = score_fn(C_i + D_i)``; there is no user embedding.
``score_fn`` and ``item_local`` never leave the client (the authors' engine deletes exactly these
keys before upload).

Loss (paper, Eq. for client ``u`` at round ``a``)::

    BCE  -  lambda(a) * ||D_u - C||_F^2  +  mu(a) * ||C||_1

The first penalty keeps the local table away from the global one (so ``D_u`` holds what is
personal), the second makes ``C`` sparse. Both weights follow a curriculum that grows with the
round, ``lambda(a) = lambda * tanh(a / 10)`` and ``mu(a) = mu * tanh(a / 10)`` (the authors'
default ``vary_param='tanh'``), with ``a = server_round - 1`` so the first round trains on BCE
alone; :meth:`FedRAP.set_round` updates them.

Choices made here (stability and protocol):

* Norms are means over the penalised entries, as in the authors' code (``MSELoss`` and
  ``L1Loss`` against zero), not sums, so ``lambda`` and ``mu`` are on the authors' scale.
* Penalised rows: the items of the batch when :meth:`FedRAP.regularization` gets ``items`` (as
  the authors' loss, computed on the batch's embeddings), otherwise the whole catalogue.
* ``-||D - C||^2`` is unbounded below. Each squared entry is clipped at ``max_gap**2``, so the
  repulsion stops once an entry of ``D_u`` differs from ``C`` by ``max_gap`` and the loss stays
  bounded below; ``max_gap=None`` restores the paper's unbounded term.
* ``D_u`` starts at zero (the authors use ``N(0, 1)``): a new client's model equals the global
  one, and items never trained locally keep ``D_i = 0`` and are scored by ``C_i`` alone.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupOptim, item_table_lr

#: Weight schedules of the two penalties, as a function of the 0-based round ``a``.
SCHEDULES = ("tanh", "fixed")


class FedRAP(FedRecModel):
    """FedRAP for one user.

    Parameters
    ----------
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d``.
    lambda_ : float, default 0.1
        Final weight of the ``-||D_u - C||^2`` term (authors' default), ``>= 0``.
    mu : float, default 0.1
        Final weight of the ``||C||_1`` term (authors' default), ``>= 0``.
    schedule : {"tanh", "fixed"}, default "tanh"
        ``"tanh"``: weights ``w * tanh(a / 10)`` at 0-based round ``a``; ``"fixed"``: ``w``.
    max_gap : float or None, default 1.0
        Clip of ``|D_u - C|`` per entry in the repulsion term (see module docstring); ``None``
        keeps the paper's unbounded term.
    local_init_std : float, default 0.0
        Standard deviation of the initial ``item_local``; ``0`` initialises it to zeros.

    Attributes
    ----------
    item_emb : torch.nn.Embedding
        Shared global item table ``C``, ``(num_items, dim)``.
    item_local : torch.nn.Embedding
        Private local item table ``D_u``, ``(num_items, dim)``.
    score_fn : torch.nn.Linear
        Private affine score function ``(dim -> 1)``.
    lambda_a, mu_a : float
        Current penalty weights, set by :meth:`set_round` (the round-1 weights until then:
        0 with ``"tanh"``, ``lambda_`` and ``mu`` with ``"fixed"``).

    Raises
    ------
    ValueError
        On a negative weight, an unknown schedule, a non-positive ``max_gap`` or a negative
        ``local_init_std``.
    """

    shared_prefixes = ("item_emb.",)
    scorer_prefixes = ("score_fn.",)

    def __init__(
        self,
        num_items: int,
        dim: int = 32,
        lambda_: float = 0.1,
        mu: float = 0.1,
        schedule: str = "tanh",
        max_gap: float | None = 1.0,
        local_init_std: float = 0.0,
    ) -> None:
        super().__init__(num_items, dim)
        if lambda_ < 0 or mu < 0:
            raise ValueError(f"lambda_ and mu must be >= 0, got {lambda_=} {mu=}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
        if max_gap is not None and max_gap <= 0:
            raise ValueError(f"max_gap must be positive or None, got {max_gap}")
        if local_init_std < 0:
            raise ValueError(f"local_init_std must be >= 0, got {local_init_std}")
        self.lambda_ = float(lambda_)
        self.mu = float(mu)
        self.schedule = schedule
        self.max_gap = None if max_gap is None else float(max_gap)
        self.item_local = nn.Embedding(self.num_items, self.dim)
        with torch.no_grad():
            if local_init_std == 0:
                self.item_local.weight.zero_()
            else:
                self.item_local.weight.normal_(0.0, local_init_std)
        self.score_fn = nn.Linear(self.dim, 1)
        self.lambda_a = 0.0
        self.mu_a = 0.0
        self.set_round(1)

    def set_round(self, server_round: int) -> None:
        """Set the penalty weights for 1-based ``server_round`` (``a = server_round - 1``)."""
        factor = 1.0 if self.schedule == "fixed" else math.tanh(max(server_round - 1, 0) / 10)
        self.lambda_a = self.lambda_ * factor
        self.mu_a = self.mu * factor

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Additive item vectors ``C_i + D_i``: int64 ``(batch,)`` -> float ``(batch, dim)``."""
        return self.item_emb(items) + self.item_local(items)

    def default_optimizers(self) -> dict[str, GroupOptim]:
        """The authors' ML-100K command (README of github.com/mtics/FedRAP: one SGD over all
        parameters, ``lr_args = 1e3`` for both item tables, ``lr_network = 1e-4`` for the score
        function) leaves the score function at its initialisation and stayed below MostPop
        under fedmm's protocol (docs/results.md, section 1). fedmm uses the PFedRec family's
        update instead, with a 10x smaller item-table rate (the full ``lr_eta = 80`` diverged to
        NaN within 40 rounds on ML-100K): SGD on the global table ``C`` at
        ``item_table_lr(num_items, eta=8)``, on the local table ``D_u`` and the score function
        at ``1.0``. Chosen on validation in short probes (docs/results.md, section 1)."""
        return {"items": GroupOptim("sgd", item_table_lr(self.num_items, eta=8.0)),
                "local_items": GroupOptim("sgd", 1.0), "private": GroupOptim("sgd", 1.0)}

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``score_fn(v)``: float ``(batch, dim)`` -> float ``(batch,)``."""
        self._check_vectors(vectors)
        return self.score_fn(vectors).squeeze(-1)

    def regularization(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``-lambda(a) * mean((D - C)^2) + mu(a) * mean(|C|)`` (scalar).

        Parameters
        ----------
        items : torch.Tensor or None, default None
            int64 ``(batch,)``: penalise these rows (duplicates count as often as they occur);
            ``None``: the whole ``(num_items, dim)`` tables.

        Returns
        -------
        torch.Tensor
            float scalar; exactly zero (no graph) while both weights are zero.
        """
        if self.lambda_a == 0 and self.mu_a == 0:
            return self.item_emb.weight.new_zeros(())
        if items is None:
            common, local = self.item_emb.weight, self.item_local.weight
        else:
            common, local = self.item_emb(items), self.item_local(items)
        gap = (local - common).pow(2)
        if self.max_gap is not None:
            gap = gap.clamp(max=self.max_gap**2)
        return -self.lambda_a * gap.mean() + self.mu_a * common.abs().mean()
