"""GFMFR group preference: apply a group's averaged prediction function to its fused features.

``E_M_l = P̄_l(Q_l)``: the server averages the prediction-function parameters of the members of
group ``l`` (:func:`average_state`), builds a scorer from them (the caller does this with the
backbone's ``score_vectors``) and scores the group's fused item features ``Q_l``
(:func:`group_preference`). For implicit feedback the result sent to clients is, per item, the
Bernoulli distribution ``[1 - p, p]`` with ``p = sigmoid(logit)``; clients add
``lambda * KL(E_M_l || own prediction)`` to their loss. :func:`signal_diagnostics` measures how
faithful the fused features and the signals sent are. The functions are pure; no Flower
import here.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from server_tasks.averaging import weighted_mean


def group_preference(Q_l, score_fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Per-item preference distribution of a group.

    Parameters
    ----------
    Q_l : torch.Tensor or numpy.ndarray
        float ``(N, d)``: fused item features of group ``l``.
    score_fn : callable
        ``score_fn(vectors float32 (N, d)) -> logits (N,)`` (or ``(N, 1)``): the group's
        averaged prediction function. Called once, without gradients.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, 2)``: columns ``[1 - p, p]`` with ``p = sigmoid(logit)``; rows sum to 1.
        ``1 - p`` is computed as ``sigmoid(-logit)`` (accurate when ``p`` is close to 1).
    """
    q = torch.as_tensor(Q_l, dtype=torch.float32)
    if q.ndim != 2:
        raise ValueError(f"Q_l must be 2-D (N, d), got shape {tuple(q.shape)}")
    with torch.no_grad():
        logits = torch.as_tensor(score_fn(q))
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.shape != (q.shape[0],):
        raise ValueError(f"score_fn returned shape {tuple(logits.shape)} for {q.shape[0]} "
                         f"vectors; expected ({q.shape[0]},) logits")
    logits = logits.detach().to(torch.float64).cpu()
    if not torch.isfinite(logits).all():
        raise ValueError("score_fn returned NaN/inf logits; check the averaged prediction "
                         "function (diverged client updates?)")
    out = torch.stack([torch.sigmoid(-logits), torch.sigmoid(logits)], 1)
    return out.numpy().astype(np.float32)


def average_state(states: Sequence[dict[str, torch.Tensor]],
                  weights: Sequence[float] | np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of the members' prediction-function parameters ``P̄_l``.

    Parameters
    ----------
    states : sequence of dict of str to torch.Tensor
        One state dict per member, all with the same keys and shapes.
    weights : sequence of float or None, default None
        Non-negative member weights (e.g. number of training examples); ``None`` = equal.

    Returns
    -------
    dict of str to torch.Tensor
        Same keys; floating tensors are ``sum_i w_i s_i / sum_i w_i`` (computed in float64,
        returned in the first state's dtype, on CPU); non-floating tensors (counters) are
        copied from the first state.
    """
    if len(states) == 0:
        raise ValueError("average_state needs at least one state dict (the group is empty)")
    if weights is None:
        w = np.ones(len(states))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != len(states):
            raise ValueError(f"{w.size} weights for {len(states)} state dicts")
        if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], 1):
        if set(s.keys()) != set(keys):
            diff = sorted(set(s.keys()) ^ set(keys))
            raise KeyError(f"state dict {i} has different keys than state dict 0: {diff}")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = torch.as_tensor(states[0][key])
        for i, s in enumerate(states):
            if tuple(torch.as_tensor(s[key]).shape) != tuple(first.shape):
                raise ValueError(f"parameter {key!r}: state dict {i} has shape "
                                 f"{tuple(torch.as_tensor(s[key]).shape)}, state dict 0 has "
                                 f"{tuple(first.shape)}")
        if not first.is_floating_point():
            out[key] = first.detach().cpu().clone()
            continue
        mean = weighted_mean([torch.as_tensor(s[key]).detach().cpu().to(torch.float64).numpy()
                              for s in states], w)
        out[key] = torch.from_numpy(mean).to(first.dtype)
    return out


def signal_diagnostics(q: torch.Tensor, targets: torch.Tensor, active: list[int],
                       scorer: torch.nn.Module | None,
                       pbars: Mapping[int, dict[str, torch.Tensor]]) -> dict[str, float]:
    """How faithful this round's fused features and group signals are (logged per round).

    Parameters
    ----------
    q : torch.Tensor
        float ``(g, N, d)``: fused item features ``Q_l`` of every group.
    targets : torch.Tensor
        float ``(g, N, d)``: group targets ``C_l`` (members' averaged item tables).
    active : list of int
        Groups with members this round (the others have no target).
    scorer : torch.nn.Module or None
        A backbone instance whose ``score_vectors`` applies ``P̄_l`` after loading ``pbars[l]``
        (server mode); ``None`` in client mode (``P̄_l`` needs the private user embedding).
    pbars : mapping
        Group -> averaged prediction-function state ``P̄_l``.

    Returns
    -------
    dict
        ``gfmfr-fusion-r2``: ``1 - MSE(Q, C) / Var(C)`` over the active groups (share of the
        targets' variance the fusion module reproduces). Server mode also gives
        ``gfmfr-signal-corr``: mean over active groups of the Pearson correlation, across items,
        between the logits ``P̄_l(Q_l)`` that are sent and ``P̄_l(C_l)`` (the signal an exact fit
        would give), and ``gfmfr-signal-std``: mean across groups of the std over items of the
        sent probability ``p``.
    """
    idx = torch.as_tensor(active, dtype=torch.long)
    qa, ca = q[idx].float(), targets[idx].float()
    var = float(((ca - ca.mean(dim=1, keepdim=True)) ** 2).mean())
    out = {"gfmfr-fusion-r2": 1.0 - float(((qa - ca) ** 2).mean()) / max(var, 1e-12)}
    if scorer is None:
        return out
    corrs, stds = [], []
    with torch.no_grad():
        for j, l in enumerate(active):
            scorer.load_state_dict(pbars[l], strict=False)
            sent = scorer.score_vectors(qa[j]).float().reshape(-1)
            exact = scorer.score_vectors(ca[j]).float().reshape(-1)
            a, b = sent - sent.mean(), exact - exact.mean()
            denom = float(a.norm() * b.norm())
            corrs.append(float((a * b).sum()) / denom if denom > 0 else 0.0)
            stds.append(float(torch.sigmoid(sent).std()))
    out["gfmfr-signal-corr"] = float(np.mean(corrs))
    out["gfmfr-signal-std"] = float(np.mean(stds))
    return out
