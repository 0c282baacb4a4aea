"""Prototype embedding ``e_j = E_AE(F_PLM(p_j))`` and item-prototype cosine similarity.

No Flower import here.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

def cosine_similarity_matrix(items, prototypes) -> np.ndarray:
    """Cosine similarity of every item with every prototype.

    Parameters
    ----------
    items : array-like
        float, shape ``(N, d)``.
    prototypes : array-like
        float, shape ``(P, d)``.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, P)``; a zero vector has similarity 0 with everything.
    """
    a = np.asarray(items, dtype=np.float64)
    b = np.asarray(prototypes, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, d) and (P, d) arrays of equal d, got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


class TextPrototypeEmbedder:
    """``names -> E_AE(F_PLM(names))``: prototype texts to item-embedding space.

    Parameters
    ----------
    autoencoder : server_tasks.autoencoder.ItemAutoencoder
        Calibrated autoencoder; its :meth:`embed` is used (same space as the item table).
    text_model : str or None, default None
        Text encoder for :func:`server_tasks.text_encoder.encode_texts` (must be the one the
        items were encoded with).
    device : str, default "cpu"
        Device of the text encoder.
    encode_fn : callable or None, default None
        ``(list[str]) -> float (P, D)`` replacing the text encoder (e.g. cached embeddings).
    """

    def __init__(self, autoencoder, text_model: str | None = None, device: str = "cpu",
                 encode_fn: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.autoencoder = autoencoder
        self.text_model = text_model
        self.device = device
        self.encode_fn = encode_fn

    def __call__(self, names: list[str]) -> np.ndarray:
        """Embed prototype names: list of ``P`` str -> float32 ``(P, d)``."""
        import torch

        if self.encode_fn is not None:
            x = np.asarray(self.encode_fn(list(names)), dtype=np.float32)
        else:
            from server_tasks.text_encoder import encode_texts
            x = encode_texts(list(names), model=self.text_model, device=self.device)
        param = next(self.autoencoder.parameters())
        with torch.no_grad():
            z = self.autoencoder.embed(torch.as_tensor(x, dtype=torch.float32,
                                                       device=param.device))
        return z.cpu().numpy().astype(np.float32)
