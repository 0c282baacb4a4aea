"""PFedRec: Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023.

There is no user embedding: the user is represented by a personalised score function
``score_fn`` (``Linear(dim, 1)``) that never leaves the client, applied to the item embedding,
``logit = score_fn(v_i)``. The item table ``item_emb`` is the only shared part and is
aggregated by the server.

The two personalisations of the paper map onto this model as follows:

* personalised score function: ``score_fn`` is private (a state-dict key outside
  :meth:`shared_keys`), so each client keeps its own across rounds;
* personalised item embeddings: each round the client starts from the global item table and
  fine-tunes it during local training (the paper's item-embedding update happens there,
  before the upload); the fine-tuned table is not kept after the round.

Local training follows the authors' engine (``engine.py``, ``fed_train_single_batch``): per
batch, one SGD step on the score function, then a second forward pass and one SGD step on the
item table (:attr:`PFedRec.update_steps`, :meth:`PFedRec.default_optimizers`).

Evaluation scores every item with the CURRENT GLOBAL item table (the one the evaluate message
carries) and the user's private score function. This differs from the authors' code, which
scores each user with the item table as that user's last local training left it, and draws
training negatives that exclude the user's held-out items. Run under fedmm's protocol
(``bench/official_protocol.py``, docs/results.md section 1.0) the official code reaches
sampled HR@10 61.2 at round 100 instead of 67-69: the negatives are what flatter it; its
stale local tables alone score lower than the global one (52.2 at round 100).
"""
from __future__ import annotations

import torch
from torch import nn

from fedmm.models.base import FedRecModel
from fedmm.models.optim import GroupOptim, item_table_lr


class PFedRec(FedRecModel):
    """PFedRec for one user.

    Parameters
    ----------
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d``.

    Attributes
    ----------
    item_emb : torch.nn.Embedding
        Shared item table, ``(num_items, dim)``.
    score_fn : torch.nn.Linear
        Private personalised score function ``(dim -> 1)``, PyTorch's default initialisation.
    """

    shared_prefixes = ("item_emb.",)
    scorer_prefixes = ("score_fn.",)
    #: The official engine's two steps per batch: the score function first, then (a second
    #: forward pass) the item table.
    update_steps = (("private",), ("items",))

    def __init__(self, num_items: int, dim: int = 32) -> None:
        super().__init__(num_items, dim)
        self.score_fn = nn.Linear(self.dim, 1)

    def default_optimizers(self) -> dict[str, GroupOptim]:
        """The official engine's (``engine.py``, ``fed_train_single_batch``): SGD on the score
        function at ``lr = 0.1``; SGD on the item table at ``lr * num_items * lr_eta`` with
        ``lr_eta = 80`` (the loss is a batch mean, so this rescales it to a per-item step)."""
        return {"private": GroupOptim("sgd", 0.1), "items": GroupOptim("sgd", item_table_lr(self.num_items))}

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits ``score_fn(v)``: float ``(batch, dim)`` -> float ``(batch,)``."""
        self._check_vectors(vectors)
        return self.score_fn(vectors).squeeze(-1)
