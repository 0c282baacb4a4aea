"""FedMF: Chai et al., "Secure Federated Matrix Factorization", IEEE Intelligent Systems 2020.

Each client holds its private user vector ``u``; the item table ``V`` is shared and aggregated
by the server. The score of item ``i`` is the inner product ``<u, v_i>``.

Deviation from the paper: FedMF factorises explicit ratings with a squared loss (and encrypts
the item gradients with homomorphic encryption). We follow the implicit-feedback protocol of
PFedRec and FedSLLM instead: the inner product is a logit trained with BCE on positives and
sampled negatives. Secure aggregation is a transport concern and is not part of the model.
"""
from __future__ import annotations

import torch
from torch import nn

from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupOptim, item_table_lr


class FedMF(FedRecModel):
    """Federated matrix factorisation for one user.

    Parameters
    ----------
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d``.

    Attributes
    ----------
    user_emb : torch.nn.Parameter
        Private user vector, float ``(dim,)``, initialised ``N(0, 1/dim)`` so that the initial
        logits ``<u, v_i>`` have unit variance when ``item_emb`` rows are ``N(0, 1)``.
    item_emb : torch.nn.Embedding
        Shared item table, ``(num_items, dim)``.
    """

    shared_prefixes = ("item_emb.",)
    scorer_prefixes = ("user_emb",)

    def __init__(self, num_items: int, dim: int = 32) -> None:
        super().__init__(num_items, dim)
        self.user_emb = nn.Parameter(torch.randn(self.dim) * self.dim**-0.5)

    def default_optimizers(self) -> dict[str, GroupOptim]:
        """FedMF's official code (github.com/Di-Chai/FedMF) factorises explicit ratings with
        per-rating SGD and has no implicit-feedback setting, so fedmm uses the PFedRec family's
        federated update (the FedSLLM and GFMFR papers evaluate FedMF in that family of code):
        SGD on the item table at :func:`~fedmm.models.optim.item_table_lr` and SGD on the user
        vector at the family's base rate ``0.1`` (``8``, GPFedRec's user-embedding rate, made
        the scores NaN on the tests' grouped data). Measured in short probes (docs/results.md,
        section 1)."""
        return {"items": GroupOptim("sgd", item_table_lr(self.num_items)), "private": GroupOptim("sgd", 0.1)}

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``<u, v>``: float ``(batch, dim)`` -> float ``(batch,)``."""
        self._check_vectors(vectors)
        return vectors @ self.user_emb
