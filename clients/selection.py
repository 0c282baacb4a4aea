"""Client-side sample selection: FedSLLM prototype scores and the baseline samplers.

FedSLLM (LLM-derived semantic prototypes for client sample selection in federated
recommendation). With its current model a client scores each training interaction ``i``
(logit ``r_ui``) and each prototype embedding ``e_j`` (logit ``r_uj``). The server sends the
cosine similarities ``cos(i, j)`` of the item table with the prototypes. Two score forms
(run-config key ``fedsllm-score``):

* ``"probability"`` (default; what the paper's prose in section 4.3 says a high score means,
  "semantically close and hard to predict"): similarity on ``[0, 1]``,
  ``sim(i, j) = (cos(i, j) + 1) / 2``, and the prediction gap on probabilities,
  ``div(i, j) = |sigmoid(r_ui) - sigmoid(r_uj)|``, so both factors live on ``[0, 1]``;
* ``"literal"`` (Eq. 9-11 taken literally, the earlier behaviour): ``sim = cos`` in
  ``[-1, 1]`` and ``div = |r_ui - r_uj|`` on logits. With centred autoencoder codes many
  cosines are negative, so ``min_j`` is set by anti-aligned prototypes and the same samples
  win every round (docs/results.md, section 3: 92.5 % repeat);

then ``s(i, j) = sim(i, j) / (div(i, j) + eps)``, ``Score(i) = min_j s(i, j)``; the top-``S``
fraction by ``Score`` is trained on; feedback ``j*(i) = argmin_j s(i, j)`` for every local
sample and the counts ``c_u[j] = #{i : j*(i) = j}`` are uploaded (the server sums them for the
LLM update prompt).

Baselines at the same fraction ``S`` work on ``p_i = sigmoid(r_ui)`` of the user's training
positives: Random, Entropy (highest binary entropy), Margin (smallest ``|2p - 1|``),
Least-confidence (lowest ``max(p, 1 - p)``); ``"cluster"`` is the FedSLLM rule with K-Means
centroids as prototypes (the server sends different vectors, the client rule is the same);
``"fedselect"`` (:func:`select_fedselect`) and ``"fale"`` (:func:`select_fale`) adapt the two
federated data-selection papers the FedSLLM paper compares with; ``"random-pass"``
(:func:`select_random_pass`) is FedSLLM's selection pass in a random order (the same
without-replacement schedule as ``fedsllm-pool = "unseen"``, no Score: the fair baseline for
"does the Score add anything"); ``"base"`` keeps every sample.

Conventions (deterministic):

* sample budget ``k = max(1, floor(S * n))`` (a tolerance of ``1e-9`` absorbs float error, so
  ``0.1 * 30`` gives 3), capped at ``n``; ``n = 0`` selects nothing;
* rankings use a stable sort, so ties go to the LOWER sample index; ``argmin`` ties go to the
  lower prototype index;
* returned indices are in rank order (best first), except the random draws of Random,
  FedSelect and FALE and ``base`` (ascending).

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
    "FEDSELECT_MOMENTUM",
    "PASS_METHODS",
    "POOLS",
    "PROTOTYPE_METHODS",
    "SAMPLERS",
    "SCORE_FORMS",
    "Selection",
    "budget",
    "fedselect_margin",
    "fedsllm_scores",
    "leverage_scores",
    "positive_loss",
    "prototype_counts",
    "select_entropy",
    "select_fale",
    "select_fedselect",
    "select_least_confidence",
    "select_margin",
    "select_random",
    "select_random_pass",
    "select_samples",
    "select_top_fraction",
    "select_top_unseen",
]

#: Methods whose client rule needs prototype scores ``r_protos`` and similarities ``sim``.
PROTOTYPE_METHODS = frozenset({"fedsllm", "cluster"})
#: Methods that always keep a pass mask (the client sends ``used`` whatever ``fedsllm-pool``).
PASS_METHODS = frozenset({"random-pass"})
#: Values of ``fedsllm-score``: the paper's intent (default), Eq. 9-11 taken literally, and two
#: one-factor diagnostic forms (``"hardness"``: ``1 - sigmoid(r_ui)`` alone; ``"similarity"``:
#: ``min_j (cos(i, j) + 1) / 2`` alone; the feedback ``j*`` stays that of ``"probability"``).
SCORE_FORMS = ("probability", "literal", "hardness", "similarity")
#: Values of ``fedsllm-pool``: which positives the top-``S`` rule ranks (:func:`select_top_unseen`).
POOLS = ("unseen", "all")
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


def fedsllm_scores(r_items, r_protos, sim, eps: float = 1e-6,
                   form: str = "probability") -> tuple[np.ndarray, np.ndarray]:
    """FedSLLM sample scores ``Score(i) = min_j s(i, j)`` and feedback ``j*(i)``.

    Parameters
    ----------
    r_items : array-like or torch.Tensor
        float, shape ``(n,)``: the client's logits ``r_ui`` for its ``n`` training samples.
    r_protos : array-like or torch.Tensor
        float, shape ``(P,)``: the client's logits ``r_uj`` for the ``P`` prototype embeddings.
    sim : array-like or torch.Tensor
        float, shape ``(n, P)``: cosine similarity ``cos(i, j)`` in ``[-1, 1]`` of each
        sample's item and each prototype (the server's ``(N, P)`` matrix indexed by the
        samples' item ids).
    eps : float, default 1e-6
        Added to the prediction gap before dividing; must be positive.
    form : {"probability", "literal", "hardness", "similarity"}, default "probability"
        ``"probability"``: ``s(i, j) = ((cos + 1) / 2) / (|sigmoid(r_ui) - sigmoid(r_uj)| + eps)``;
        ``"literal"``: ``s(i, j) = cos / (|r_ui - r_uj| + eps)`` (see the module docstring);
        ``"hardness"`` (diagnostic): ``Score(i) = 1 - sigmoid(r_ui)``; ``"similarity"``
        (diagnostic): ``Score(i) = min_j (cos + 1) / 2``; for these two ``jstar`` is that of
        ``"probability"``.

    Returns
    -------
    score : numpy.ndarray
        float64, shape ``(n,)``: ``min_j s(i, j)``.
    jstar : numpy.ndarray
        int64, shape ``(n,)``: ``argmin_j`` of the same quantity (first index on ties).

    Raises
    ------
    ValueError
        Shapes disagree, ``P == 0``, ``eps <= 0``, an unknown ``form`` or a value is not finite.
    """
    r_items = _as_numpy(r_items, "r_items", 1)
    r_protos = _as_numpy(r_protos, "r_protos", 1)
    sim = _as_numpy(sim, "sim", 2)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if form not in SCORE_FORMS:
        raise ValueError(f"unknown FedSLLM score form {form!r}; choose one of {list(SCORE_FORMS)}")
    if r_protos.shape[0] == 0:
        raise ValueError("r_protos is empty: at least one prototype is needed")
    if sim.shape != (r_items.shape[0], r_protos.shape[0]):
        raise ValueError(f"sim has shape {sim.shape}, expected (n, P) = "
                         f"({r_items.shape[0]}, {r_protos.shape[0]}) from r_items and r_protos")
    if r_items.shape[0] == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
    if form == "literal":
        gap = np.abs(r_items[:, None] - r_protos[None, :])
    else:
        sim = (np.clip(sim, -1.0, 1.0) + 1.0) / 2.0
        gap = np.abs(_sigmoid(r_items)[:, None] - _sigmoid(r_protos)[None, :])
    s = sim / (gap + eps)
    jstar = s.argmin(axis=1).astype(np.int64)
    if form == "hardness":
        return 1.0 - _sigmoid(r_items), jstar
    if form == "similarity":
        return sim.min(axis=1), jstar
    return s.min(axis=1), jstar


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


def select_top_unseen(scores, fraction: float, used=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``S`` among the samples not yet used in the current pass, and the updated mask.

    A pass over the client's samples: each round the ``k = budget(n, fraction)`` best-scoring
    samples among those not selected since the pass began are kept; when fewer than ``k``
    remain, all of them are kept, a new pass starts and the rest of the budget is filled with
    the best-scoring samples among the others. Every sample is thus trained on once every
    ``ceil(1 / S)`` rounds of the client, in score order within a pass.

    Parameters
    ----------
    scores : array-like or torch.Tensor
        float, shape ``(n,)``; higher is better.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    used : array-like of bool or None, default None
        shape ``(n,)``: samples already selected in the current pass (``None``: none).

    Returns
    -------
    indices : numpy.ndarray
        int64, shape ``(k,)``: the unused samples first (best first), then the new pass's.
    used : numpy.ndarray
        bool, shape ``(n,)``: the mask after this round (the new pass's samples only when a
        pass ended).
    """
    scores = _as_numpy(scores, "scores", 1)
    n = scores.shape[0]
    used = np.zeros(n, dtype=bool) if used is None else np.asarray(used, dtype=bool)
    if used.shape != (n,):
        raise ValueError(f"used has shape {used.shape}, expected ({n},)")
    k = budget(n, fraction)
    order = np.argsort(-scores, kind="stable")
    first = order[~used[order]][:k]
    new_used = used.copy()
    new_used[first] = True
    if first.size < k:  # pass exhausted: start a new one with the best of the others
        rest = order[used[order]][:k - first.size]
        new_used = np.zeros(n, dtype=bool)
        new_used[rest] = True
        first = np.concatenate([first, rest])
    return first.astype(np.int64), new_used


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


def select_random_pass(n: int, fraction: float, used=None,
                       rng=None) -> tuple[np.ndarray, np.ndarray]:
    """A selection pass in random order: :func:`select_top_unseen` on uniform random scores.

    Every sample is kept once every ``ceil(1 / S)`` rounds of the client (as with FedSLLM's
    ``fedsllm-pool = "unseen"``), in an order drawn afresh each round instead of by Score.

    Parameters
    ----------
    n : int
        Number of local samples.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    used : array-like of bool or None, default None
        shape ``(n,)``: samples already selected in the current pass (``None``: none).
    rng : numpy.random.Generator, int or None, default None
        Random source (an int is a seed).

    Returns
    -------
    indices : numpy.ndarray
        int64, shape ``(k,)``.
    used : numpy.ndarray
        bool, shape ``(n,)``: the pass mask after this round.
    """
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return select_top_unseen(_rng(rng).random(int(n)), fraction, used)


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


#: Momentum ``mu`` of FedSelect's meta-margin (``meta_momentum`` of the paper's code).
FEDSELECT_MOMENTUM = 0.9
#: Weight floor of the FedSelect / FALE draws: lets ``k`` distinct samples be drawn when fewer
#: than ``k`` weights are positive, without changing the order of magnitude of any other weight.
_DRAW_FLOOR = 1e-6


def _weighted_draw(weights: np.ndarray, k: int, rng) -> np.ndarray:
    """``k`` distinct indices drawn without replacement with probability ``∝ weights + floor``,
    ascending (uniform when every weight is 0)."""
    w = np.asarray(weights, dtype=np.float64) + _DRAW_FLOOR
    idx = _rng(rng).choice(w.shape[0], size=k, replace=False, p=w / w.sum())
    return np.sort(idx).astype(np.int64)


def _minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalisation to ``[0, 1]``; all zeros when the values are constant."""
    span = float(values.max() - values.min()) if values.size else 0.0
    if not span > 0:
        return np.zeros_like(values, dtype=np.float64)
    return (values - values.min()) / span


def positive_loss(r_items) -> np.ndarray:
    """BCE of a positive interaction, ``-log sigmoid(r) = log(1 + exp(-r))``, overflow-free.

    Parameters
    ----------
    r_items : array-like or torch.Tensor
        float, shape ``(n,)``: logits of the user's training positives.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)``, non-negative.
    """
    return np.logaddexp(0.0, -_as_numpy(r_items, "r_items", 1))


def fedselect_margin(loss_before, loss_after, previous=None,
                     momentum: float = FEDSELECT_MOMENTUM) -> np.ndarray:
    """FedSelect's momentum meta-margin of every local sample, in ``[0, 1]``.

    ``m = minmax(loss_before - loss_after)`` (how much the client's local training lowered
    each sample's loss), then, with a previous margin, ``minmax(mu * previous + (1 - mu) * m)``.

    Parameters
    ----------
    loss_before : array-like
        float, shape ``(n,)``: per-sample loss before this round's local training (the loss
        after the client's previous local training, or under the received global model in its
        first round).
    loss_after : array-like
        float, shape ``(n,)``: per-sample loss after this round's local training.
    previous : array-like or None, default None
        float, shape ``(n,)``: the margin of the client's previous round.
    momentum : float, default FEDSELECT_MOMENTUM
        ``mu`` in ``[0, 1)``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)`` in ``[0, 1]`` (all zeros when every sample moved alike).
    """
    before = _as_numpy(loss_before, "loss_before", 1)
    after = _as_numpy(loss_after, "loss_after", 1)
    if before.shape != after.shape:
        raise ValueError(f"loss_before {before.shape} and loss_after {after.shape} differ")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    margin = _minmax(before - after)
    if previous is None:
        return margin
    prev = _as_numpy(previous, "previous", 1)
    if prev.shape != margin.shape:
        raise ValueError(f"previous margin has shape {prev.shape}, expected {margin.shape}")
    return _minmax(momentum * prev + (1.0 - momentum) * margin)


def select_fedselect(margin_or_n, fraction: float, rng=None) -> np.ndarray:
    """FedSelect (adapted): ``budget(n, fraction)`` samples drawn with probability ``∝`` their
    momentum meta-margin.

    Paper: Y. Zhang, X. Miao, B. Li, Y. Wu, Y. Shang, "Proxy-Validated Importance-Aware
    Federated Sample Selection with Meta Learning" (FedSelect, KDD 2025). There, a small meta
    network maps each sample's loss under the global model to an importance weight; the client
    draws ``S * n`` samples with probability ``∝`` weight (uniform during warm-up). After local
    training it computes every sample's loss change since its previous training, the
    *meta-margin*, min-max normalised and smoothed with momentum; the samples with the largest
    meta-margin form a proxy validation set, on which the meta network of the most important
    client is trained by one-step look-ahead meta-learning and sent back to the server.

    Adapted here (per-client selection of a fraction ``S`` of the user's training positives,
    no server-side meta network, nothing extra uploaded): the meta network's training target,
    the momentum meta-margin itself (:func:`fedselect_margin`, kept in the client's private
    state), is used as the sampling weight. The draws are without replacement (``k`` distinct
    positives, like every sampler here; the paper's sampler draws with replacement). A client
    with no margin yet (its first round) draws uniformly, as the paper's warm-up does.

    Parameters
    ----------
    margin_or_n : int or array-like
        ``n`` (first round: uniform) or the float ``(n,)`` meta-margin in ``[0, 1]``.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    rng : numpy.random.Generator, int or None, default None
        Random source (an int is a seed).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k,)``, ascending.
    """
    if np.isscalar(margin_or_n):
        return select_random(int(margin_or_n), fraction, rng)
    margin = _as_numpy(margin_or_n, "margin", 1)
    if margin.size and (margin.min() < 0 or margin.max() > 1):
        raise ValueError("FedSelect margin must lie in [0, 1] (see fedselect_margin)")
    return _weighted_draw(margin, budget(margin.shape[0], fraction), rng)


def leverage_scores(features, rcond: float = 1e-10) -> np.ndarray:
    """Statistical leverage of each row of ``X``: ``h_i = ||U_i||^2`` with ``X = U S V^T``.

    Equal to ``x_i^T (X^T X)^+ x_i``; every ``h_i`` is in ``[0, 1]`` and they sum to the rank.

    Parameters
    ----------
    features : array-like or torch.Tensor
        float, shape ``(n, d)``.
    rcond : float, default 1e-10
        Singular values below ``rcond * max`` count as zero (rank cut).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)``.
    """
    x = _as_numpy(features, "features", 2)
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    if sv.size == 0 or not sv[0] > 0:
        return np.zeros(x.shape[0], dtype=np.float64)
    rank = int((sv > rcond * sv[0]).sum())
    return np.square(u[:, :rank]).sum(axis=1)


def select_fale(features, fraction: float, rng=None) -> np.ndarray:
    """FALE (adapted): ``budget(n, fraction)`` samples drawn with probability ``∝`` leverage.

    Paper: "Efficient Heterogeneity-Aware Federated Active Data Selection" (FALE: Federated
    Active data selection by LEverage score sampling, ICML 2025). For federated regression
    with non-i.i.d. clients, the server runs a federated SVD (FedSVD) of the pooled feature
    matrix, each unlabelled instance gets its statistical leverage ``||U_i||^2``, and the
    instances to label are drawn by leverage-score sampling, in one pass, with no initial
    labelled set and no model.

    Adapted here: the instance features are the vectors the backbone feeds its scorer for the
    user's training positives (``item_vectors``, ``(n, d)``, from the round's global model); the
    SVD is the client's own (per-client budget ``S * n``, so no cross-client SVD and nothing
    uploaded); the draw is repeated every round on the current vectors instead of once, and is
    without replacement (``k`` distinct positives).

    Parameters
    ----------
    features : array-like or torch.Tensor
        float, shape ``(n, d)``.
    fraction : float
        Kept share ``S`` in ``(0, 1]``.
    rng : numpy.random.Generator, int or None, default None
        Random source (an int is a seed).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k,)``, ascending.
    """
    h = leverage_scores(features)
    return _weighted_draw(h, budget(h.shape[0], fraction), rng)


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
    used : numpy.ndarray or None
        bool, shape ``(n,)``: samples used in the current pass after this selection
        (``pool = "unseen"`` only, :func:`select_top_unseen`).
    """

    indices: np.ndarray
    jstar: np.ndarray | None = None
    counts: np.ndarray | None = None
    used: np.ndarray | None = None


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


def _random_pass(r_items, fraction, *, rng=None, used=None, **_unused) -> Selection:
    """Registry adapter of :func:`select_random_pass`."""
    n = _as_numpy(r_items, "r_items", 1).shape[0]
    indices, new_used = select_random_pass(n, fraction, used, rng)
    return Selection(indices, used=new_used)


def _prototype(r_items, fraction, *, r_protos=None, sim=None, eps=1e-6, score="probability",
               pool="all", used=None, **_unused) -> Selection:
    """FedSLLM rule (also used with K-Means centroids for ``"cluster"``): top-``S`` by
    ``Score`` over all positives (``pool = "all"``) or over those not yet used in the current
    pass (``pool = "unseen"``, :func:`select_top_unseen`)."""
    if r_protos is None or sim is None:
        raise ValueError("prototype-based selection needs r_protos (P,) and sim (n, P) from the "
                         "server's prototype payload")
    if pool not in POOLS:
        raise ValueError(f"unknown selection pool {pool!r}; choose one of {list(POOLS)}")
    score, jstar = fedsllm_scores(r_items, r_protos, sim, eps, form=score)
    counts = prototype_counts(jstar, len(_as_numpy(r_protos, "r_protos", 1)))
    if pool == "unseen":
        indices, new_used = select_top_unseen(score, fraction, used)
        return Selection(indices, jstar, counts, new_used)
    return Selection(select_top_fraction(score, fraction, True), jstar, counts)


def _fedselect(r_items, fraction, *, rng=None, margin=None, **_unused) -> Selection:
    """Registry adapter of :func:`select_fedselect` (``margin=None``: first round, uniform)."""
    n = _as_numpy(r_items, "r_items", 1).shape[0]
    if margin is not None and len(margin) != n:
        raise ValueError(f"FedSelect margin has {len(margin)} entries for {n} samples")
    return Selection(select_fedselect(n if margin is None else margin, fraction, rng))


def _fale(r_items, fraction, *, rng=None, features=None, **_unused) -> Selection:
    """Registry adapter of :func:`select_fale`."""
    n = _as_numpy(r_items, "r_items", 1).shape[0]
    if features is None:
        raise ValueError("FALE selection needs features (n, d): the scorer's item vectors of "
                         "the samples")
    if len(features) != n:
        raise ValueError(f"FALE features have {len(features)} rows for {n} samples")
    return Selection(select_fale(features, fraction, rng))


#: Sampler name -> adapter
#: ``(r_items, fraction, *, rng, r_protos, sim, eps, score, margin, features) -> Selection``.
SAMPLERS: dict[str, Callable[..., Selection]] = {
    "base": _base,
    "random": _random,
    "random-pass": _random_pass,
    "entropy": _uncertainty(select_entropy),
    "margin": _uncertainty(select_margin),
    "least-confidence": _uncertainty(select_least_confidence),
    "fedsllm": _prototype,
    "cluster": _prototype,
    "fedselect": _fedselect,
    "fale": _fale,
}


def select_samples(method: str, r_items, fraction: float, *, rng=None, r_protos=None, sim=None,
                   eps: float = 1e-6, score: str = "probability", margin=None,
                   features=None, pool: str = "all", used=None) -> Selection:
    """Select a client's training samples with the named sampler.

    Parameters
    ----------
    method : str
        A key of :data:`SAMPLERS`: ``"base"``, ``"random"``, ``"random-pass"``, ``"entropy"``, ``"margin"``,
        ``"least-confidence"``, ``"fedsllm"``, ``"cluster"``, ``"fedselect"`` or ``"fale"``.
    r_items : array-like or torch.Tensor
        float, shape ``(n,)``: logits ``r_ui`` of the user's training positives (uncertainty
        samplers use ``sigmoid(r_items)``).
    fraction : float
        Kept share ``S`` in ``(0, 1]`` (ignored by ``"base"``).
    rng : numpy.random.Generator, int or None, default None
        Used by ``"random"``, ``"random-pass"``, ``"fedselect"`` and ``"fale"``.
    r_protos : array-like or None, default None
        float, shape ``(P,)``: logits of the prototype embeddings (prototype methods).
    sim : array-like or None, default None
        float, shape ``(n, P)``: item-prototype cosine similarities (prototype methods).
    eps : float, default 1e-6
        See :func:`fedsllm_scores`.
    score : {"probability", "literal"}, default "probability"
        Score form of the prototype methods (:func:`fedsllm_scores`).
    margin : array-like or None, default None
        float, shape ``(n,)``: FedSelect's meta-margin (``None``: the client's first round).
    features : array-like or None, default None
        float, shape ``(n, d)``: the scorer's item vectors of the samples (``"fale"``).
    pool : {"all", "unseen"}, default "all"
        Prototype methods: rank all samples, or only those not used in the current pass.
    used : array-like of bool or None, default None
        shape ``(n,)``: samples used in the current pass (``pool = "unseen"``, and
        ``"random-pass"`` always).

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
    return sampler(r_items, fraction, rng=rng, r_protos=r_protos, sim=sim, eps=eps, score=score,
                   margin=margin, features=features, pool=pool, used=used)
