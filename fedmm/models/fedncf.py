"""FedNCF: Perifanis & Efraimidis, "Federated Neural Collaborative Filtering",
Knowledge-Based Systems 2022.

The federated version of NCF (He et al., WWW 2017). Each client keeps its user embedding
private; the item table and the network (MLP tower and output layer) are shared and averaged
by the server. Of the three NCF variants (GMF, MLP, NeuMF) this is the MLP one: the user and
item embeddings are concatenated and passed through a ReLU tower to a single logit, trained
with BCE on implicit feedback and sampled negatives, as in the paper. The paper's secure
aggregation protocol is a transport concern and is not part of the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupOptim


class FedNCF(FedRecModel):
    """NCF-MLP for one user.

    Parameters
    ----------
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d`` (of both the user and the item embeddings).
    layers : sequence of int, optional
        Default ``(2*dim, 4*dim, 2*dim)``, i.e. the paper's ``(64, 128, 64)`` at ``dim = 32``.
        Widths of the MLP tower. ``layers[0]`` is the input width and must equal ``2 * dim``
        (the concatenation ``[u; v]``); each consecutive pair adds Linear -> ReLU -> Dropout.
        The output layer is ``Linear(layers[-1], 1)``.
    dropout : float, default 0.5
        Dropout probability after every hidden ReLU, in ``[0, 1)``. Active in ``train()`` mode
        only, so compare scores in ``eval()`` mode.

    Attributes
    ----------
    user_emb : torch.nn.Parameter
        Private user vector, float ``(dim,)``, initialised ``N(0, 1)`` like ``item_emb`` so both
        halves of the MLP input have the same scale.
    item_emb : torch.nn.Embedding
        Shared item table, ``(num_items, dim)``.
    mlp : torch.nn.Sequential
        Shared hidden tower.
    output : torch.nn.Linear
        Shared output layer ``(layers[-1] -> 1)``.

    Raises
    ------
    ValueError
        If ``layers`` is empty, has a non-positive width, ``layers[0] != 2 * dim``, or
        ``dropout`` is outside ``[0, 1)``.
    """

    shared_prefixes = ("item_emb.", "mlp.", "output.")
    scorer_prefixes = ("user_emb", "mlp.", "output.")

    def __init__(
        self,
        num_items: int,
        dim: int = 32,
        layers: Sequence[int] | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_items, dim)
        if layers is None:
            layers = (2 * int(dim), 4 * int(dim), 2 * int(dim))
        layers = tuple(int(w) for w in layers)
        if not layers or any(w <= 0 for w in layers):
            raise ValueError(
                f"layers must be a non-empty sequence of positive widths, got {layers}"
            )
        if layers[0] != 2 * self.dim:
            raise ValueError(
                f"layers[0] is the MLP input width and must equal 2 * dim = {2 * self.dim} "
                f"(concatenated user and item embeddings), got layers={layers} with dim={self.dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.layers = layers
        self.user_emb = nn.Parameter(torch.randn(self.dim))
        tower: list[nn.Module] = []
        for w_in, w_out in zip(layers[:-1], layers[1:]):
            tower += [nn.Linear(w_in, w_out), nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*tower)
        self.output = nn.Linear(layers[-1], 1)

    def default_optimizers(self) -> dict[str, GroupOptim]:
        """PROBE"""
        return {"items": GroupOptim("sgd", 0.1 * self.num_items * 80), "shared": GroupOptim("sgd", 0.1),
                "private": GroupOptim("sgd", 0.1)} if True else {"items": GroupOptim("sgd", 0.1 * self.num_items * 80),
                "private": GroupOptim("sgd", 0.1)}

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``output(mlp([u; v]))``: float ``(batch, dim)`` -> float ``(batch,)``."""
        self._check_vectors(vectors)
        user = self.user_emb.expand(vectors.shape[0], -1)
        hidden = self.mlp(torch.cat([user, vectors], dim=1))
        return self.output(hidden).squeeze(-1)
