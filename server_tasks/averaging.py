"""The one weighted mean of client uploads on the server, and the error for unusable replies.

FedAvg (:func:`strategies.aggregation.weighted_average`), item-wise aggregation
(:func:`strategies.aggregation.itemwise_average`), GFMFR's group targets
(:func:`server_tasks.fusion.group_targets`) and averaged prediction functions
(:func:`server_tasks.group_pref.average_state`) all compute :func:`weighted_mean`.
No Flower import here.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ReplyError(ValueError):
    """A client reply cannot be aggregated; the message says which reply and why."""


def weighted_mean(values: Sequence[np.ndarray], weights, *,
                  divide_last: bool = False) -> np.ndarray:
    """``sum_c w_c x_c / sum_c w_c`` over the clients ``c``, accumulated in float64.

    Parameters
    ----------
    values : sequence of numpy.ndarray
        ``C`` arrays of one shape ``S`` (e.g. an item table ``(N, d)``), one per client.
    weights : array-like
        Non-negative float weights, shape ``(C,)`` (one per client) or ``(C, *S[:k])`` (e.g.
        ``(C, N)``: one per client and item, broadcast over the remaining axes).
    divide_last : bool, default False
        ``False``: the weights are normalised first and the shares summed
        (``sum_c (w_c / W) x_c``, FedAvg's order); ``True``: the weighted sum is divided by the
        total at the end (``(sum_c w_c x_c) / W``, the per-item order). Both are the same mean;
        the order changes only float rounding, and each caller keeps the order it had so that
        its results stay bit-identical.

    Returns
    -------
    numpy.ndarray
        float64, shape ``S``; NaN where the weights sum to zero.

    Raises
    ------
    ValueError
        No values, or ``weights`` does not have one leading entry per value.
    """
    if len(values) == 0:
        raise ValueError("weighted_mean needs at least one array")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 0 or w.shape[0] != len(values):
        raise ValueError(f"{w.shape[0] if w.ndim else 'scalar'} weights for {len(values)} arrays")
    total = w.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = w if divide_last else w / total
        acc = np.zeros(np.shape(values[0]), dtype=np.float64)
        for share, x in zip(shares, values):
            x = np.asarray(x)
            acc += (share if share.ndim == 0
                    else share.reshape(share.shape + (1,) * (x.ndim - share.ndim))) * x
        if not divide_last:
            return acc
        return acc / total.reshape(total.shape + (1,) * (acc.ndim - total.ndim))
