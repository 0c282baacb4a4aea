"""Client-side privacy of uploads: Laplace noise (``ldp-delta``) and pseudo-interaction
padding of the item table (``pad-items``). No Flower import here.

* :func:`laplace_noise` — as in GFMFR's privacy experiment (and FedRAP/PFedRec's), each client
  perturbs the float parameters it uploads with i.i.d. Laplace noise of scale ``delta``
  (``Lap(0, delta)``: mean absolute value ``delta``, standard deviation ``sqrt(2) * delta``).
* :func:`count_noise` — the integer counts a client uploads (item-wise aggregation's
  ``item-counts``, FedSLLM's ``prototype-counts``) get the discrete analogue of the same scale,
  two-sided geometric noise, clipped at 0 so they stay valid counts.
* :func:`pad_item_updates` — FedPerGNN-style pseudo interactions: ``N`` random items the user
  never interacted with get item-table updates drawn from a Gaussian with the mean and
  covariance of the real updates, so the set of changed rows no longer equals the user's
  positives plus sampled negatives.

No formal epsilon is claimed: the uploads are not clipped, so their sensitivity is unbounded;
``delta`` is a noise scale, measured against an attack in ``docs/privacy.md``.
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


def count_noise(counts: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Add two-sided geometric (discrete Laplace) noise of scale ``delta`` to integer counts,
    then clip at 0.

    The noise ``k`` has ``P(k) = (1 - a) / (1 + a) * a**|k|`` with ``a = exp(-1 / delta)``, the
    integer counterpart of ``Laplace(0, delta)``; it is drawn as the difference of two i.i.d.
    geometric variables. Clipping at 0 biases small counts upwards (a count of 0 becomes
    positive with probability ``a / (1 + a)``) but keeps the upload a valid count vector.

    Parameters
    ----------
    counts : numpy.ndarray
        Integer counts, any shape (``(N,)`` item counts, ``(P,)`` prototype counts).
    delta : float
        Noise scale (run-config key ``ldp-delta``); ``0`` returns ``counts`` unchanged.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        int64, same shape, every entry ``>= 0``.

    Raises
    ------
    ValueError
        ``delta`` negative or not finite.
    TypeError
        ``counts`` is not an integer array.
    """
    delta = float(delta)
    if not math.isfinite(delta) or delta < 0:
        raise ValueError(f"ldp-delta (noise scale) must be finite and >= 0, got {delta}")
    counts = np.asarray(counts)
    if not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"counts have dtype {counts.dtype}; count noise needs integers")
    if delta == 0.0:
        return counts
    p = -math.expm1(-1.0 / delta)  # 1 - a, success probability of each geometric draw
    noise = rng.geometric(p, size=counts.shape) - rng.geometric(p, size=counts.shape)
    return np.maximum(counts.astype(np.int64) + noise, 0)


def pad_item_updates(sent: np.ndarray, trained: np.ndarray, exclude: np.ndarray, n_pad: int,
                     rng: np.random.Generator,
                     counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pseudo-interaction padding of an uploaded item table (FedPerGNN, Wu et al. 2022).

    Rule. Let ``C`` be the rows whose update ``trained - sent`` is non-zero (the user's
    training positives and this round's sampled negatives) and ``U`` their updates,
    ``(|C|, d)``, with mean ``mu`` and covariance ``S``. Draw ``n = min(n_pad, #candidates)``
    items uniformly without replacement from the candidates (items not in ``exclude`` and not
    in ``C``), and give each the update ``mu + Z @ (U - mu) / sqrt(|C|)`` with ``Z`` standard
    normal ``(n, |C|)``: a Gaussian draw with exactly the mean ``mu`` and covariance ``S`` of
    the real updates (no Cholesky needed, rank-deficient ``S`` is fine). With ``counts`` (the
    item-wise aggregation's per-item counts), each padded item gets the count of a uniformly
    drawn real changed row.

    Why it hides the item set and the PCA sign. The server sees ``|C| + n`` changed rows, of
    which ``n`` are items the user never rated, drawn uniformly, so the changed set reveals
    the positives only up to that dilution (changed-row recall ``n_pos / (|C| + n)``). The
    padded updates share the real updates' first two moments, hence the same first principal
    direction, but their projection on it is a unimodal Gaussian draw, not a label: about
    ``Phi(mu . v / sqrt(v' S v))`` of them land on each side of the sign split, so the side the
    attack calls "positive" is diluted by random items. What remains: the real positives form
    the far tail of a bimodal projection, which a Gaussian does not reproduce; an attacker
    modelling that shape recovers some of them (measured in docs/privacy.md).

    Parameters
    ----------
    sent : numpy.ndarray
        float ``(N, d)``: the item table the server sent this round.
    trained : numpy.ndarray
        float ``(N, d)``: the table after local training (not modified).
    exclude : numpy.ndarray
        int64 ``(k,)``: items that must not be padded (all the user's interactions).
    n_pad : int
        Number of padded items ``N`` (run-config key ``pad-items``); ``0`` disables padding.
    rng : numpy.random.Generator
        Seed it per (seed, round, user) for reproducible uploads.
    counts : numpy.ndarray or None, default None
        int ``(N,)`` per-item training counts to pad alongside (not modified).

    Returns
    -------
    table : numpy.ndarray
        float ``(N, d)``, dtype of ``trained``: ``trained`` with the padded rows replaced by
        ``sent + update`` (a copy when anything is padded).
    padded : numpy.ndarray
        int64 ``(n,)`` sorted padded items (empty when ``n_pad == 0`` or nothing changed).
    counts : numpy.ndarray or None
        int64 ``(N,)`` padded counts, or ``None`` when ``counts`` is ``None``.

    Raises
    ------
    ValueError
        ``n_pad`` negative, or ``sent`` and ``trained`` of different or non-2-D shapes.
    """
    n_pad = int(n_pad)
    if n_pad < 0:
        raise ValueError(f"pad-items must be >= 0, got {n_pad}")
    sent, trained = np.asarray(sent), np.asarray(trained)
    if sent.ndim != 2 or sent.shape != trained.shape:
        raise ValueError(f"sent {sent.shape} and trained {trained.shape} item tables must be "
                         "2-D of the same shape (num_items, dim)")
    out_counts = None if counts is None else np.asarray(counts).astype(np.int64)
    update = trained.astype(np.float64) - sent.astype(np.float64)
    changed = np.flatnonzero(np.any(update != 0.0, axis=1))
    if n_pad == 0 or changed.size == 0:
        return trained, np.zeros(0, dtype=np.int64), out_counts
    blocked = np.zeros(sent.shape[0], dtype=bool)
    blocked[np.asarray(exclude, dtype=np.int64)] = True
    blocked[changed] = True
    candidates = np.flatnonzero(~blocked)
    n = min(n_pad, candidates.size)
    padded = np.sort(rng.choice(candidates, size=n, replace=False)).astype(np.int64)
    real = update[changed]  # (|C|, d)
    mu = real.mean(axis=0)
    z = rng.standard_normal((n, changed.size))
    fake = mu + z @ (real - mu) / math.sqrt(changed.size)  # (n, d)
    table = trained.copy()
    table[padded] = (sent[padded].astype(np.float64) + fake).astype(trained.dtype)
    if out_counts is not None:
        out_counts[padded] = out_counts[changed[rng.integers(changed.size, size=n)]]
    return table, padded, out_counts
