"""FedSLLM: what the clients report about their sample selection, summed over a round.

:func:`sum_prototype_counts` checks and sums the per-client prototype counts ``c_u`` that drive
the LLM's revision prompt; :func:`selection_overlap` averages the optional coverage / repeat
diagnostics. No Flower import here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from server_tasks.averaging import ReplyError


def sum_prototype_counts(counts: Sequence[np.ndarray], num_prototypes: int,
                         sources: Sequence[object], *, key: str) -> np.ndarray:
    """Sum the clients' prototype counts ``sum_u c_u``.

    Parameters
    ----------
    counts : sequence of numpy.ndarray
        One int ``(P,)`` array per reply.
    num_prototypes : int
        ``P`` of the prototypes sent this round.
    sources : sequence
        Node ids of the replies, same length (named in errors).
    key : str
        Name of the count array in the replies (named in errors).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(P,)``.

    Raises
    ------
    ReplyError
        A count vector has the wrong shape, a non-integer or a negative value.
    """
    total = np.zeros(int(num_prototypes), dtype=np.int64)
    for src, c in zip(sources, counts):
        arr = np.asarray(c)
        if arr.shape != (int(num_prototypes),):
            raise ReplyError(f"reply from node {src}: '{key}' has shape {arr.shape}, "
                             f"expected ({num_prototypes},) (one count per prototype sent)")
        if not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
            raise ReplyError(f"reply from node {src}: '{key}' must hold non-negative "
                             f"integers, got dtype {arr.dtype}")
        total += arr.astype(np.int64)
    return total


#: Per-client selection diagnostics averaged per round (see :mod:`clients.fedsllm`).
DIAGNOSTIC_KEYS = ("selection-coverage", "selection-repeat", "selection-p-selected",
                   "selection-p-all", "selection-positive-share")


def selection_overlap(metrics: Sequence[Mapping[str, Any]]) -> dict[str, float | int]:
    """Round means of the clients' optional ``selection-coverage`` / ``selection-repeat``.

    Parameters
    ----------
    metrics : sequence of mapping
        The train replies' metrics; a reply may lack either key (``selection-repeat`` is absent
        in a client's first round).

    Returns
    -------
    dict
        ``selection-coverage``, ``selection-repeat``, ``selection-p-selected``,
        ``selection-p-all`` and ``selection-positive-share`` (unweighted means over the replies
        that report them) and ``selection-repeat-clients`` (how many reported a repeat); a key
        with no reports is left out.
    """
    out: dict[str, float | int] = {}
    for key in DIAGNOSTIC_KEYS:
        vals = [float(m[key]) for m in metrics if key in m]
        if vals:
            out[key] = float(np.mean(vals))
        if key == "selection-repeat":
            out["selection-repeat-clients"] = len(vals)
    return out
