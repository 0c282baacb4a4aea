"""Negative sampling for local training and for the sampled evaluation protocol."""
from __future__ import annotations

import numpy as np


def sample_negatives(num_items: int, exclude: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` items uniformly (with replacement) from ``[0, num_items)`` minus ``exclude``.

    Parameters
    ----------
    num_items : int
    exclude : numpy.ndarray
        int64 items that must never be returned (the user's training positives).
    n : int
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        int64 ``(n,)``.
    """
    excl = np.unique(exclude)
    allowed = num_items - excl.size
    if allowed <= 0:
        raise ValueError(f"no negative item left: the user interacted with all {num_items} items")
    # Draw from the allowed set directly: map u in [0, allowed) past the sorted excluded ids.
    u = rng.integers(0, allowed, size=n)
    # number of excluded ids <= candidate, iterated to a fixed point (excl is sorted)
    shift = np.searchsorted(excl - np.arange(excl.size), u, side="right")
    return (u + shift).astype(np.int64)


def eval_negatives(user: int, num_items: int, interacted: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``n`` sampled-protocol negatives of ``user``: distinct items the user never interacted
    with in any split, fixed per (seed, user). Returns int64 ``(min(n, available),)``."""
    rng = np.random.default_rng([seed, user, 99])
    excl = np.unique(interacted)
    allowed = num_items - excl.size
    k = min(n, allowed)
    u = rng.choice(allowed, size=k, replace=False)
    shift = np.searchsorted(excl - np.arange(excl.size), u, side="right")
    return (u + shift).astype(np.int64)
