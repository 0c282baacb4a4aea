"""FedNCF: Perifanis & Efraimidis, "Federated Neural Collaborative Filtering",
Knowledge-Based Systems 2022.

The federated version of NCF (He et al., WWW 2017). Each client keeps its user embedding
private; the item table and the network (MLP tower and output layer) are shared and averaged
by the server. Of the three NCF variants (GMF, MLP, NeuMF) the default is NeuMF, the paper's
strongest: the output layer reads the GMF branch ``u * v`` (element-wise) beside the MLP
tower's output on ``[u; v]``; ``gmf=False`` gives the MLP-only variant. Trained with BCE on
implicit feedback and sampled negatives, as in the paper. Choice: both branches read the same
user and item embeddings (NeuMF's original has separate ones per branch), so the item table
stays one ``(num_items, dim)`` table like every other backbone's. The MLP-only variant stayed
below MostPop on ML-100K in short probes (docs/results.md, section 1). The paper's secure
aggregation protocol is a transport concern and is not part of the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupOptim, item_table_lr


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
    gmf : bool, default True
        NeuMF (GMF branch + MLP tower) when true, MLP-only NCF when false.

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
        Shared output layer ``(dim + layers[-1] -> 1)`` (NeuMF) or ``(layers[-1] -> 1)``.

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
        gmf: bool = True,
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
        self.gmf = bool(gmf)
        self.output = nn.Linear(layers[-1] + (self.dim if self.gmf else 0), 1)

    def default_optimizers(self) -> dict[str, GroupOptim]:
        """No official FedNCF code is available; fedmm uses the PFedRec family's federated
        update: SGD on the item table at :func:`~fedmm.models.optim.item_table_lr` (``0.1 *
        N * 80``), SGD on the shared tower and output layer at ``0.1`` (the family's network
        rate) and on the user vector at ``8`` (``lr * lr_eta``, GPFedRec's user-embedding rate
        at full participation), with the tower's and the user vector's gradients clipped to
        norm 1 (as FedPerGNN's official code clips). Without the clipping the 200-round ML-100K
        replica reached NaN by round 60; with it, it was stable for 200 rounds and the best of
        the settings tried (docs/results.md, section 1.1)."""
        return {"items": GroupOptim("sgd", item_table_lr(self.num_items)),
                "shared": GroupOptim("sgd", 0.1, clip=1.0),
                "private": GroupOptim("sgd", 8.0, clip=1.0)}

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``output([u * v; mlp([u; v])])`` (NeuMF) or ``output(mlp([u; v]))``:
        float ``(batch, dim)`` -> float ``(batch,)``."""
        self._check_vectors(vectors)
        user = self.user_emb.expand(vectors.shape[0], -1)
        hidden = self.mlp(torch.cat([user, vectors], dim=1))
        if self.gmf:
            hidden = torch.cat([user * vectors, hidden], dim=1)
        return self.output(hidden).squeeze(-1)
