"""Recommendation backbones, one per file, all on the :class:`FedRecModel` contract."""
from __future__ import annotations

from typing import Any

from fedmm.models.base import FedRecModel
from fedmm.models.fedmf import FedMF
from fedmm.models.fedncf import FedNCF
from fedmm.models.fedpergnn import FedPerGNN
from fedmm.models.fedrap import FedRAP
from fedmm.models.pfedrec import PFedRec

#: Backbone name (the ``backbone`` run-config value) -> model class.
BACKBONES: dict[str, type[FedRecModel]] = {
    "fedmf": FedMF,
    "fedncf": FedNCF,
    "pfedrec": PFedRec,
    "fedrap": FedRAP,
    "fedpergnn": FedPerGNN,
}


def build_model(name: str, num_items: int, dim: int = 32, **kwargs: Any) -> FedRecModel:
    """Build one user's model.

    Parameters
    ----------
    name : str
        Backbone name, a key of :data:`BACKBONES` (case-insensitive).
    num_items : int
        Catalogue size ``N``.
    dim : int, default 32
        Embedding dimension ``d``.
    **kwargs
        Backbone-specific arguments (e.g. ``layers`` for FedNCF, ``lambda_`` for FedRAP,
        ``neighbors`` for FedPerGNN).

    Returns
    -------
    FedRecModel
        A freshly initialised model (seed torch beforehand for reproducibility).

    Raises
    ------
    ValueError
        If ``name`` is not a known backbone, or the backbone rejects its arguments.
    """
    key = str(name).strip().lower()
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    return BACKBONES[key](num_items, dim, **kwargs)


__all__ = [
    "BACKBONES",
    "FedMF",
    "FedNCF",
    "FedPerGNN",
    "FedRAP",
    "FedRecModel",
    "PFedRec",
    "build_model",
]
