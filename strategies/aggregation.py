"""Pure aggregation and reply-checking helpers (no Grid, no simulation): tested alone."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_tasks.averaging import ReplyError, weighted_mean

__all__ = ["ReplyError", "better", "check_reply_arrays", "itemwise_average", "mean_metrics",
           "weighted_average"]


def weighted_average(states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """FedAvg: ``sum_c w_c * x_c / sum_c w_c`` for every key (:func:`weighted_mean`).

    Parameters
    ----------
    states : sequence of mapping str -> numpy.ndarray
        One dict of arrays per client, same keys and shapes.
    weights : sequence of float
        Non-negative weights (number of training examples), same length as ``states``.
    """
    if not states:
        raise ReplyError("nothing to aggregate: no client reply")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),) or np.any(w < 0) or w.sum() <= 0:
        raise ReplyError(f"weights must be {len(states)} non-negative numbers with a positive sum, got {weights}")
    return {key: weighted_mean([s[key] for s in states], w).astype(states[0][key].dtype)
            for key in states[0]}


def itemwise_average(tables: Sequence[np.ndarray], counts: Sequence[np.ndarray],
                     previous: np.ndarray) -> np.ndarray:
    """Item-wise aggregation of item tables: each row is averaged over the clients that trained
    that item, weighted by how often they did; rows nobody trained keep ``previous``.

    Parameters
    ----------
    tables : sequence of numpy.ndarray
        float ``(num_items, dim)`` per client.
    counts : sequence of numpy.ndarray
        ``(num_items,)`` per client: how many training samples touched each item.
    previous : numpy.ndarray
        float ``(num_items, dim)``: the global table sent this round.
    """
    c = np.stack([np.asarray(x, dtype=np.float64) for x in counts])  # (clients, N)
    if c.shape != (len(tables), *np.shape(tables[0])[:1]):
        raise ReplyError(f"item-counts shape {c.shape[1:]} does not match item table "
                         f"{np.shape(tables[0])}")
    seen = c.sum(axis=0) > 0  # (N,)
    mean = weighted_mean(tables, c, divide_last=True)  # NaN rows where nobody trained
    return np.where(seen[:, None], mean, previous.astype(np.float64)).astype(previous.dtype)


def check_reply_arrays(replies: Sequence[Mapping[str, np.ndarray]], expected: Mapping[str, np.ndarray],
                       sources: Sequence[object]) -> None:
    """Every reply must carry exactly the expected keys with the expected shapes and finite values."""
    for src, arrays in zip(sources, replies):
        missing, extra = set(expected) - set(arrays), set(arrays) - set(expected)
        if missing or extra:
            raise ReplyError(f"reply from {src}: array keys differ from the global model "
                             f"(missing {sorted(missing)}, unexpected {sorted(extra)})")
        for k, ref in expected.items():
            if arrays[k].shape != ref.shape:
                raise ReplyError(f"reply from {src}: '{k}' has shape {arrays[k].shape}, "
                                 f"expected {ref.shape}")
            if not np.all(np.isfinite(arrays[k])):
                raise ReplyError(f"reply from {src}: '{k}' contains NaN or inf (diverged local "
                                 f"training? lower 'lr')")


def mean_metrics(metrics: Sequence[Mapping[str, float]], weights: Sequence[float] | None = None,
                 skip: tuple[str, ...] = ()) -> dict[str, float]:
    """(Weighted) mean of the scalar metrics all replies share; keys in ``skip`` are dropped."""
    if not metrics:
        return {}
    keys = [k for k in metrics[0] if k not in skip and all(k in m for m in metrics)]
    w = np.ones(len(metrics)) if weights is None else np.asarray(weights, dtype=np.float64)
    return {k: float(np.average([float(m[k]) for m in metrics], weights=w)) for k in keys}


def better(value: float, best: float | None) -> bool:
    """Higher is better; the first evaluation always wins; ties keep the earlier round."""
    return best is None or value > best
