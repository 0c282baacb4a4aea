"""Client-side sample selection: FedSLLM prototype scores and the baseline samplers.

FedSLLM (LLM-derived semantic prototypes for client sample selection in federated
recommendation). With its current model a client scores each training interaction ``i``
(``r_ui``) and each prototype embedding ``e_j`` (``r_uj``). With the server's cosine
similarities ``sim(i, j)``:

* ``div(i, j) = |r_ui - r_uj|``, ``s(i, j) = sim(i, j) / (div(i, j) + eps)``;
* ``Score(i) = min_j s(i, j)``; the top-``S`` fraction by ``Score`` is trained on;
* feedback ``j*(i) = argmin_j s(i, j)`` for every local sample and the counts
  ``c_u[j] = #{i : j*(i) = j}`` are uploaded (the server sums them for the LLM update prompt).

Baselines at the same fraction ``S`` work on ``p_i = sigmoid(r_ui)`` of the user's training
positives: Random, Entropy (highest binary entropy), Margin (smallest ``|2p - 1|``),
Least-confidence (lowest ``max(p, 1 - p)``); ``"cluster"`` is the FedSLLM rule with K-Means
centroids as prototypes (the server sends different vectors, the client rule is the same);
``"base"`` keeps every sample.

Conventions (deterministic):

* sample budget ``k = max(1, floor(S * n))`` (a tolerance of ``1e-9`` absorbs float error, so
  ``0.1 * 30`` gives 3), capped at ``n``; ``n = 0`` selects nothing;
* rankings use a stable sort, so ties go to the LOWER sample index; ``argmin`` ties go to the
  lower prototype index;
* returned indices are in rank order (best first), except Random and ``base`` (ascending).

Note: for a binary output, entropy, margin and least confidence are all monotone in
``|p - 0.5|``, so the three uncertainty samplers select the same samples up to float rounding
of near-ties. They are kept separate because the paper reports them separately.

Pure numpy (torch tensors are accepted and converted); no Flower import.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PROTOTYPE_METHODS",
    "SAMPLERS",
    "Selection",
    "budget",
    "fedsllm_scores",
    "prototype_counts",
    "select_entropy",
    "select_least_confidence",
    "select_margin",
    "select_random",
    "select_samples",
    "select_top_fraction",
]

#: Methods whose client rule needs prototype scores ``r_protos`` and similarities ``sim``.
PROTOTYPE_METHODS = frozenset({"fedsllm", "cluster"})
#: Float tolerance of the budget ``floor(S * n)``.
_BUDGET_TOL = 1e-9


def _as_numpy(values, name: str, ndim: int, dtype=np.float64) -> np.ndarray:
    """Convert an array-like or (CPU/GPU, possibly grad-tracking) torch tensor to numpy."""
    if hasattr(values, "detach"):  # torch.Tensor without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float, np.floating)) and 0.0 < float(fraction) <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def budget(n: int, fraction: float) -> int:
    """Number of samples kept: ``min(n, max(1, floor(fraction * n)))``, 0 when ``n == 0``.

    Parameters
    ----------
    n : int
        Number of local samples.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.

    Returns
    -------
    int
    """
    fraction = _check_fraction(fraction)
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return 0
    return min(int(n), max(1, math.floor(fraction * int(n) + _BUDGET_TOL)))


def fedsllm_scores(r_items, r_protos, sim, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """FedSLLM sample scores ``Score(i) = min_j s(i, j)`` and feedback ``j*(i)``.

    Parameters
    ----------
    r_items : array-like or torch.Tensor
        float, shape ``(n,)``: the client's logits ``r_ui`` for its ``n`` training samples.
    r_protos : array-like or torch.Tensor
        float, shape ``(P,)``: the client's logits ``r_uj`` for the ``P`` prototype embeddings.
    sim : array-like or torch.Tensor
        float, shape ``(n, P)``: cosine similarity ``sim(i, j)`` of each sample's item and each
        prototype (the server's ``(N, P)`` matrix indexed by the samples' item ids).
    eps : float, default 1e-6
        Added to ``|r_ui - r_uj|`` before dividing; must be positive.

    Returns
    -------
    score : numpy.ndarray
        float64, shape ``(n,)``: ``min_j sim(i, j) / (|r_ui - r_uj| + eps)``.
    jstar : numpy.ndarray
        int64, shape ``(n,)``: ``argmin_j`` of the same quantity (first index on ties).

    Raises
    ------
    ValueError
        Shapes disagree, ``P == 0``, ``eps <= 0`` or a value is not finite.
    """
    r_items = _as_numpy(r_items, "r_items", 1)
    r_protos = _as_numpy(r_protos, "r_protos", 1)
    sim = _as_numpy(sim, "sim", 2)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if r_protos.shape[0] == 0:
        raise ValueError("r_protos is empty: at least one prototype is needed")
    if sim.shape != (r_items.shape[0], r_protos.shape[0]):
        raise ValueError(f"sim has shape {sim.shape}, expected (n, P) = "
                         f"({r_items.shape[0]}, {r_protos.shape[0]}) from r_items and r_protos")
    s = sim / (np.abs(r_items[:, None] - r_protos[None, :]) + eps)
    if r_items.shape[0] == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
    return s.min(axis=1), s.argmin(axis=1).astype(np.int64)


def select_top_fraction(scores, fraction: float, higher_is_better: bool = True) -> np.ndarray:
    """Indices of the best ``budget(n, fraction)`` scores, best first.

    Parameters
    ----------
    scores : array-like or torch.Tensor
        float, shape ``(n,)``.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    higher_is_better : bool, default True
        Rank by descending score (else ascending).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k,)`` with ``k = budget(n, fraction)``; ties go to the lower index.
    """
    scores = _as_numpy(scores, "scores", 1)
    k = budget(scores.shape[0], fraction)
    order = np.argsort(-scores if higher_is_better else scores, kind="stable")
    return order[:k].astype(np.int64)


def prototype_counts(jstar, num_prototypes: int) -> np.ndarray:
    """Feedback counts ``c_u[j] = #{i : j*(i) = j}``.

    Parameters
    ----------
    jstar : array-like
        int, shape ``(n,)``, values in ``[0, num_prototypes)``.
    num_prototypes : int
        ``P``.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(P,)``, summing to ``n``.
    """
    jstar = _as_numpy(jstar, "jstar", 1, dtype=np.int64)
    if int(num_prototypes) <= 0:
        raise ValueError(f"num_prototypes must be positive, got {num_prototypes}")
    if jstar.size and (jstar.min() < 0 or jstar.max() >= num_prototypes):
        raise ValueError(f"jstar values must lie in [0, {num_prototypes}), got range "
                         f"[{jstar.min()}, {jstar.max()}]")
    return np.bincount(jstar, minlength=int(num_prototypes)).astype(np.int64)


def _probabilities(probs) -> np.ndarray:
    p = _as_numpy(probs, "probabilities", 1)
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1]; pass sigmoid(logits), not logits")
    return p


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def select_random(probs_or_n, fraction: float, rng=None) -> np.ndarray:
    """Uniformly random ``budget(n, fraction)`` samples without replacement.

    Parameters
    ----------
    probs_or_n : int or array-like
        ``n`` or any ``(n,)`` array (only its length is used).
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    rng : numpy.random.Generator, int or None, default None
        Random source (an int is a seed). Pass a seeded one for reproducibility.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k,)``, ascending.
    """
    n = int(probs_or_n) if np.isscalar(probs_or_n) else len(_as_numpy(probs_or_n, "probs", 1))
    k = budget(n, fraction)
    return np.sort(_rng(rng).choice(n, size=k, replace=False)).astype(np.int64)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def select_entropy(probs, fraction: float, rng=None) -> np.ndarray:
    """Samples with the highest binary entropy ``H(p)``, best first.

    Parameters
    ----------
    probs : array-like or torch.Tensor
        float, shape ``(n,)``: predicted probabilities ``sigmoid(r_ui)`` in ``[0, 1]``.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    rng : ignored
        Accepted for a uniform sampler signature; ties go to the lower index.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k,)``.
    """
    return select_top_fraction(_binary_entropy(_probabilities(probs)), fraction, True)


def select_margin(probs, fraction: float, rng=None) -> np.ndarray:
    """Samples with the smallest margin ``|p - (1 - p)| = |2p - 1|``, best first.

    Parameters are those of :func:`select_entropy`.
    """
    return select_top_fraction(np.abs(2.0 * _probabilities(probs) - 1.0), fraction, False)


def select_least_confidence(probs, fraction: float, rng=None) -> np.ndarray:
    """Samples with the lowest confidence ``max(p, 1 - p)``, best first.

    Parameters are those of :func:`select_entropy`.
    """
    p = _probabilities(probs)
    return select_top_fraction(np.maximum(p, 1.0 - p), fraction, False)


@dataclass(frozen=True)
class Selection:
    """Result of :func:`select_samples`.

    Attributes
    ----------
    indices : numpy.ndarray
        int64, shape ``(k,)``: positions (into the client's training samples) to train on.
    jstar : numpy.ndarray or None
        int64, shape ``(n,)``: ``argmin_j s(i, j)`` per sample (prototype methods only).
    counts : numpy.ndarray or None
        int64, shape ``(P,)``: feedback counts to upload (prototype methods only).
    """

    indices: np.ndarray
    jstar: np.ndarray | None = None
    counts: np.ndarray | None = None


def _sigmoid(r: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * r))  # overflow-free logistic


def _uncertainty(fn: Callable) -> Callable[..., Selection]:
    def sampler(r_items, fraction, *, rng=None, **_unused) -> Selection:
        return Selection(fn(_sigmoid(_as_numpy(r_items, "r_items", 1)), fraction, rng))
    sampler.__doc__ = f"Registry adapter of :func:`{fn.__name__}` on ``sigmoid(r_items)``."
    return sampler


def _base(r_items, fraction, **_unused) -> Selection:
    """Keep every sample (``fraction`` is ignored)."""
    n = _as_numpy(r_items, "r_items", 1).shape[0]
    return Selection(np.arange(n, dtype=np.int64))


def _random(r_items, fraction, *, rng=None, **_unused) -> Selection:
    """Registry adapter of :func:`select_random`."""
    return Selection(select_random(_as_numpy(r_items, "r_items", 1), fraction, rng))


def _prototype(r_items, fraction, *, r_protos=None, sim=None, eps=1e-6, **_unused) -> Selection:
    """FedSLLM rule (also used with K-Means centroids for ``"cluster"``)."""
    if r_protos is None or sim is None:
        raise ValueError("prototype-based selection needs r_protos (P,) and sim (n, P) from the "
                         "server's prototype payload")
    score, jstar = fedsllm_scores(r_items, r_protos, sim, eps)
    counts = prototype_counts(jstar, len(_as_numpy(r_protos, "r_protos", 1)))
    return Selection(select_top_fraction(score, fraction, True), jstar, counts)


#: Sampler name -> adapter ``(r_items, fraction, *, rng, r_protos, sim, eps) -> Selection``.
SAMPLERS: dict[str, Callable[..., Selection]] = {
    "base": _base,
    "random": _random,
    "entropy": _uncertainty(select_entropy),
    "margin": _uncertainty(select_margin),
    "least-confidence": _uncertainty(select_least_confidence),
    "fedsllm": _prototype,
    "cluster": _prototype,
}


def select_samples(method: str, r_items, fraction: float, *, rng=None, r_protos=None, sim=None,
                   eps: float = 1e-6) -> Selection:
    """Select a client's training samples with the named sampler.

    Parameters
    ----------
    method : str
        A key of :data:`SAMPLERS`: ``"base"``, ``"random"``, ``"entropy"``, ``"margin"``,
        ``"least-confidence"``, ``"fedsllm"`` or ``"cluster"``.
    r_items : array-like or torch.Tensor
        float, shape ``(n,)``: logits ``r_ui`` of the user's training positives (uncertainty
        samplers use ``sigmoid(r_items)``).
    fraction : float
        Kept share ``S`` in ``(0, 1]`` (ignored by ``"base"``).
    rng : numpy.random.Generator, int or None, default None
        Used by ``"random"`` only.
    r_protos : array-like or None, default None
        float, shape ``(P,)``: logits of the prototype embeddings (prototype methods).
    sim : array-like or None, default None
        float, shape ``(n, P)``: item-prototype cosine similarities (prototype methods).
    eps : float, default 1e-6
        See :func:`fedsllm_scores`.

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        Unknown ``method`` (the message lists the known ones) or bad inputs.
    """
    try:
        sampler = SAMPLERS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sample-selection method {method!r}; "
                         f"choose one of {sorted(SAMPLERS)}") from None
    if method != "base":
        _check_fraction(fraction)
    return sampler(r_items, fraction, rng=rng, r_protos=r_protos, sim=sim, eps=eps)
