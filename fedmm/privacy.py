"""Local differential privacy for uploads: Laplace noise on every shared parameter.

As in GFMFR's privacy experiment (and FedRAP/PFedRec's), each client perturbs the parameters it
uploads with i.i.d. Laplace noise of scale ``delta`` (``Lap(0, delta)``: mean absolute value
``delta``, standard deviation ``sqrt(2) * delta``). No Flower import here.
"""
from __future__ import annotations

import math

import numpy as np


def laplace_noise(arrays: list[np.ndarray], delta: float,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Add ``Laplace(0, delta)`` noise to every element of every array.

    Parameters
    ----------
    arrays : list of numpy.ndarray
        Parameters to upload (floating dtype).
    delta : float
        Noise scale ``b`` of the Laplace distribution (run-config key ``ldp-delta``);
        ``0`` disables the noise.
    rng : numpy.random.Generator
        Source of randomness (seed it per client and round for reproducible runs).

    Returns
    -------
    list of numpy.ndarray
        New arrays of the same shapes and dtypes; with ``delta == 0`` the input arrays
        themselves (unchanged, not copied).

    Raises
    ------
    ValueError
        ``delta`` negative or not finite.
    TypeError
        An array is not floating point (noise would be truncated).
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta < 0:
        raise ValueError(f"ldp-delta (Laplace noise scale) must be finite and >= 0, got {delta}")
    if delta == 0.0:
        return list(arrays)
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"array {i} has dtype {a.dtype}; Laplace noise needs floating "
                            "parameters (integer arrays would silently truncate it)")
        out.append((a + rng.laplace(0.0, delta, size=a.shape)).astype(a.dtype, copy=False))
    return out
