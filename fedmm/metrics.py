"""Ranking metrics for leave-one-out evaluation (one held-out item per user).

``rank`` is 0-based and pessimistic: every other candidate whose score is >= the target's
counts as ranked ahead of it, so a model that scores everything equally gets the worst rank
(ties never inflate HR). A NaN score ranks ahead of every target and a NaN target is ranked
last, so a diverged model gets HR = 0, not 1 (NaN compares false with everything). HR@K = 1[rank < K]; NDCG@K = 1[rank < K] / log2(rank + 2).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def target_rank(scores: np.ndarray, target: int, candidates: np.ndarray | None = None,
                exclude: np.ndarray | None = None) -> int:
    """0-based pessimistic rank of ``target``.

    Parameters
    ----------
    scores : numpy.ndarray
        float ``(num_items,)`` scores of the whole catalogue.
    target : int
        Held-out item.
    candidates : numpy.ndarray, optional
        int64 items competing with the target (sampled protocol); default: every item.
    exclude : numpy.ndarray, optional
        int64 items removed from the competition (full protocol: the training items).
    """
    s_t = scores[target]
    if candidates is not None:
        comp = scores[candidates[candidates != target]]
        if np.isnan(s_t):
            return int(comp.size)
        return int(np.count_nonzero(~(comp < s_t)))
    if np.isnan(s_t):
        s_t = -np.inf  # every other candidate is ahead
    ahead = ~(scores < s_t)
    ahead[target] = False
    if exclude is not None and exclude.size:
        ahead[exclude] = False
    return int(np.count_nonzero(ahead))


def hit_ndcg(rank: int, ks: Iterable[int]) -> dict[str, float]:
    """``{"hr@K": ..., "ndcg@K": ...}`` for a 0-based rank."""
    out: dict[str, float] = {}
    for k in ks:
        hit = rank < k
        out[f"hr@{k}"] = float(hit)
        out[f"ndcg@{k}"] = 1.0 / math.log2(rank + 2) if hit else 0.0
    return out


def leave_one_out_metrics(scores: np.ndarray, train: np.ndarray, valid: int, test: int,
                          negatives: np.ndarray, ks: Iterable[int], protocols: Iterable[str]) -> dict[str, float]:
    """All metrics of one user: ``{split}_{protocol}_{hr|ndcg}@K``.

    Full ranking ranks the validation item against every item except the training items, and
    the test item against every item except the training items and the validation item.
    The sampled protocol ranks each held-out item against the same ``negatives`` (items the
    user never interacted with).
    """
    ks = list(ks)
    out: dict[str, float] = {}
    for protocol in protocols:
        for split, target in (("valid", valid), ("test", test)):
            if protocol == "full":
                excl = train if split == "valid" else np.append(train, valid)
                r = target_rank(scores, target, exclude=excl)
            elif protocol == "sampled":
                r = target_rank(scores, target, candidates=negatives)
            else:
                raise ValueError(f"unknown protocol '{protocol}'")
            for name, v in hit_ndcg(r, ks).items():
                out[f"{split}_{protocol}_{name}"] = v
    return out
