"""GFMFR aggregation module: fuse item modalities into group-specific item features.

For each group ``l`` the server computes ``Q_l = S_phi({E_m}, E_G[l])`` (shape
``(num_items, d)``) from the frozen modality tables ``E_m`` and a learnable group embedding
``E_G`` (``(g, d2)``), and trains ``E_G`` and ``phi`` so that ``Q_l`` matches the group target
``C_l`` (mean item table of the group's members): ``L = mean_l MSE(Q_l, C_l)`` over groups with
members this round.

Every variant first maps each modality ``m`` to a token ``t_m = Linear(LayerNorm(E_m))``
(``hidden`` wide). Items whose modality is missing (``mask[m] == False``) never read their
feature row: the token is replaced by a learned per-modality "missing" vector (``mlp``/``moe``)
or dropped from attention (``attention``), so a zero row is never treated as data.

Variants of ``S_phi`` (run-config key ``fusion``):

* ``"mlp"`` (default): ``MLP([t_1, ..., t_M, E_G[l]])``;
* ``"attention"``: the group token attends over the modality tokens and itself (one
  multi-head attention layer + feed-forward);
* ``"moe"``: mixture of experts, each an MLP over ``[t_1..t_M]``, mixed by
  ``softmax(W E_G[l])``;
* ``"multiple"`` (MultipleAgg ablation): one separate ``"mlp"`` aggregator per group, no
  parameter sharing across groups.

No Flower import here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from server_tasks.averaging import weighted_mean

#: Fusion variants :func:`make_fusion` accepts.
FUSION_KINDS = ("mlp", "attention", "moe", "multiple")

Masks = Mapping[str, torch.Tensor] | None


class _ModalityTokens(nn.Module):
    """Per-modality ``LayerNorm -> Linear`` projection to ``hidden`` plus a missing token."""

    def __init__(self, modality_dims: Mapping[str, int], hidden: int) -> None:
        super().__init__()
        if not modality_dims:
            raise ValueError("modality_dims is empty; give at least one modality")
        self.names = tuple(sorted(modality_dims))
        # LayerNorm without affine (the Linear that follows subsumes it): equalises the scales
        # of e.g. unit-norm text embeddings and raw CNN features.
        self.norm = nn.ModuleDict({m: nn.LayerNorm(int(modality_dims[m]),
                                                   elementwise_affine=False)
                                   for m in self.names})
        self.proj = nn.ModuleDict({m: nn.Linear(int(modality_dims[m]), hidden)
                                   for m in self.names})
        self.missing = nn.Parameter(torch.zeros(len(self.names), hidden))
        nn.init.normal_(self.missing, std=0.02)

    def forward(self, modalities: Mapping[str, torch.Tensor],
                masks: Masks) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(N, M, hidden)`` with missing ones replaced, and presence ``(N, M)`` bool."""
        absent = [m for m in self.names if m not in modalities]
        if absent:
            raise KeyError(f"modalities lack {absent}; the module was built for {list(self.names)}")
        tokens, present = [], []
        n = None
        for j, m in enumerate(self.names):
            x = modalities[m]
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise ValueError(f"modality {m!r} has {x.shape[0]} rows, expected {n}")
            mask = None if masks is None else masks.get(m)
            if mask is None:
                mask = torch.ones(n, dtype=torch.bool, device=x.device)
            mask = mask.to(device=x.device, dtype=torch.bool)
            if mask.shape != (n,):
                raise ValueError(f"mask of modality {m!r} has shape {tuple(mask.shape)}, "
                                 f"expected ({n},)")
            # Parameter-free preprocessing (the tables are frozen): no autograd graph needed.
            # Rows of missing items are zeroed before the projection, so their (arbitrary,
            # possibly NaN) values never reach the output.
            with torch.no_grad():
                x = self.norm[m](x.masked_fill(~mask[:, None], 0.0))
            tok = self.proj[m](x)
            tokens.append(torch.where(mask[:, None], tok, self.missing[j]))
            present.append(mask)
        return torch.stack(tokens, 1), torch.stack(present, 1)


class FusionModule(nn.Module):
    """Base of all aggregation modules.

    Parameters
    ----------
    modality_dims : mapping of str to int
        Feature size ``d_m`` of each modality table.
    num_groups : int
        ``g``.
    out_dim : int
        ``d``: size of the item embeddings the clients use.
    group_dim : int, default 16
        ``d2``: size of the group embedding ``E_G``.
    hidden : int, default 64
        Width of modality tokens and hidden layers.
    """

    kind = "base"

    def __init__(self, modality_dims: Mapping[str, int], num_groups: int, out_dim: int,
                 group_dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        if num_groups < 1 or out_dim < 1 or group_dim < 1 or hidden < 1:
            raise ValueError(f"sizes must be positive: {num_groups=} {out_dim=} {group_dim=} "
                             f"{hidden=}")
        self.num_groups = int(num_groups)
        self.out_dim = int(out_dim)
        self.group_emb = nn.Embedding(self.num_groups, int(group_dim))
        nn.init.normal_(self.group_emb.weight, std=0.1)
        # Output affine: Q = target_mean + target_scale * (network output), set from the group
        # targets by train_fusion, so the network works on standardised values whatever the
        # scale of the item embeddings (they grow during federated training).
        self.register_buffer("target_mean", torch.zeros(self.out_dim))
        self.register_buffer("target_scale", torch.ones(()))

    def set_target_stats(self, targets: torch.Tensor) -> None:
        """Set the output affine from targets ``(G, N, d)``: per-dimension mean, one overall
        standard deviation (floored at 1e-6)."""
        flat = targets.detach().reshape(-1, targets.shape[-1]).float()
        self.target_mean.copy_(flat.mean(0))
        self.target_scale.copy_((flat - flat.mean(0)).pow(2).mean().sqrt().clamp_min(1e-6))

    def _denorm(self, raw: torch.Tensor) -> torch.Tensor:
        """Network output (standardised units) -> item-embedding units."""
        return self.target_mean + self.target_scale * raw

    def _groups(self, group_ids, device) -> torch.Tensor:
        if group_ids is None:
            return torch.arange(self.num_groups, device=device)
        ids = torch.as_tensor(group_ids, dtype=torch.long, device=device).reshape(-1)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_groups):
            raise ValueError(f"group ids must be in 0..{self.num_groups - 1}, got {ids.tolist()}")
        return ids

    def forward(self, modalities: Mapping[str, torch.Tensor], masks: Masks = None,
                group_ids: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Group item features.

        Parameters
        ----------
        modalities : mapping of str to torch.Tensor
            float32 ``(N, d_m)`` per modality.
        masks : mapping of str to torch.Tensor or None
            bool ``(N,)`` per modality, True = present; missing key or ``None`` = all present.
        group_ids : sequence of int or None
            Groups to compute (default all ``g``).

        Returns
        -------
        torch.Tensor
            float32 ``(len(group_ids), N, d)``.
        """
        raise NotImplementedError


class MLPFusion(FusionModule):
    """``Q_l = W2 act(W_i [t_1..t_M] + W_g E_G[l] + b1) + b2`` (concat MLP, factorised)."""

    kind = "mlp"

    def __init__(self, modality_dims, num_groups, out_dim, group_dim=16, hidden=64) -> None:
        super().__init__(modality_dims, num_groups, out_dim, group_dim, hidden)
        self.tokens = _ModalityTokens(modality_dims, hidden)
        m = len(self.tokens.names)
        # Linear on the concatenation [tokens, group] split in an item part and a group part so
        # the item part is computed once for all groups.
        self.item_in = nn.Linear(m * hidden, hidden)
        self.group_in = nn.Linear(int(group_dim), hidden, bias=False)
        # LayerNorm before the activation: the hidden units of an item cannot all drift into
        # GELU's flat negative range at once (which froze the output at the target mean,
        # R^2 = 0, in a 100-round ML-100K run without it).
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, modalities, masks=None, group_ids=None):
        tok, _ = self.tokens(modalities, masks)
        ids = self._groups(group_ids, tok.device)
        h_item = self.item_in(tok.flatten(1))                      # (N, H)
        h_group = self.group_in(self.group_emb(ids))               # (G, H)
        return self._denorm(self.out(h_item[None, :, :] + h_group[:, None, :]))  # (G, N, d)


class AttentionFusion(FusionModule):
    """The group token attends over ``[group token, t_1..t_M]`` (missing modalities masked)."""

    kind = "attention"

    def __init__(self, modality_dims, num_groups, out_dim, group_dim=16, hidden=64,
                 heads: int = 4) -> None:
        super().__init__(modality_dims, num_groups, out_dim, group_dim, hidden)
        if hidden % heads:
            heads = 1
        self.tokens = _ModalityTokens(modality_dims, hidden)
        self.modality_pos = nn.Parameter(torch.zeros(len(self.tokens.names), hidden))
        self.group_in = nn.Linear(int(group_dim), hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(),
                                 nn.Linear(2 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, modalities, masks=None, group_ids=None):
        tok, present = self.tokens(modalities, masks)              # (N, M, H), (N, M)
        ids = self._groups(group_ids, tok.device)
        n, m, h = tok.shape
        gcount = ids.numel()
        gtok = self.group_in(self.group_emb(ids))                  # (G, H)
        q = gtok[:, None, None, :].expand(gcount, n, 1, h)
        kv_items = (tok + self.modality_pos)[None].expand(gcount, n, m, h)
        kv = torch.cat([q, kv_items], 2).reshape(gcount * n, m + 1, h)
        pad = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=tok.device), ~present], 1)
        pad = pad[None].expand(gcount, n, m + 1).reshape(gcount * n, m + 1)
        q = q.reshape(gcount * n, 1, h)
        att, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        x = self.norm1(q + att)
        x = self.norm2(x + self.ffn(x))
        return self._denorm(self.out(x).reshape(gcount, n, -1))


class MoEFusion(FusionModule):
    """``Q_l = sum_e softmax(W E_G[l])_e * expert_e([t_1..t_M])``."""

    kind = "moe"

    def __init__(self, modality_dims, num_groups, out_dim, group_dim=16, hidden=64,
                 num_experts: int = 4) -> None:
        super().__init__(modality_dims, num_groups, out_dim, group_dim, hidden)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.tokens = _ModalityTokens(modality_dims, hidden)
        m = len(self.tokens.names)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(m * hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                          nn.Linear(hidden, out_dim))
            for _ in range(num_experts))
        self.gate = nn.Linear(int(group_dim), num_experts)

    def forward(self, modalities, masks=None, group_ids=None):
        tok, _ = self.tokens(modalities, masks)
        ids = self._groups(group_ids, tok.device)
        flat = tok.flatten(1)
        experts = torch.stack([e(flat) for e in self.experts], 0)  # (E, N, d)
        gate = torch.softmax(self.gate(self.group_emb(ids)), -1)   # (G, E)
        return self._denorm(torch.einsum("ge,end->gnd", gate, experts))


class MultipleFusion(FusionModule):
    """MultipleAgg ablation: an independent single-group :class:`MLPFusion` per group."""

    kind = "multiple"

    def __init__(self, modality_dims, num_groups, out_dim, group_dim=16, hidden=64) -> None:
        super().__init__(modality_dims, num_groups, out_dim, group_dim, hidden)
        self.per_group = nn.ModuleList(
            MLPFusion(modality_dims, 1, out_dim, group_dim, hidden) for _ in range(num_groups))

    def forward(self, modalities, masks=None, group_ids=None):
        first = next(iter(modalities.values()))
        ids = self._groups(group_ids, first.device)
        if ids.numel() == 0:
            return first.new_zeros((0, first.shape[0], self.out_dim))
        return torch.cat([self.per_group[int(l)](modalities, masks) for l in ids.tolist()], 0)

    def set_target_stats(self, targets: torch.Tensor) -> None:
        """Same output affine for every per-group module."""
        super().set_target_stats(targets)
        for module in self.per_group:
            module.set_target_stats(targets)


_KINDS = {"mlp": MLPFusion, "attention": AttentionFusion, "moe": MoEFusion,
          "multiple": MultipleFusion}


def make_fusion(kind: str, modality_dims: Mapping[str, int], num_groups: int, out_dim: int,
                group_dim: int = 16, hidden: int = 64, seed: int = 0) -> FusionModule:
    """Build an aggregation module with seeded initialisation (global RNG untouched).

    Parameters
    ----------
    kind : {"mlp", "attention", "moe", "multiple"}
        Run-config key ``fusion``.
    modality_dims : mapping of str to int
        ``{modality: d_m}``.
    num_groups, out_dim, group_dim, hidden : int
        See :class:`FusionModule`.
    seed : int, default 0

    Returns
    -------
    FusionModule
    """
    if kind not in _KINDS:
        raise ValueError(f"fusion: unknown variant {kind!r}; expected one of {list(FUSION_KINDS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return _KINDS[kind](dict(modality_dims), int(num_groups), int(out_dim), int(group_dim),
                            int(hidden))


def group_targets(item_tables: list[np.ndarray], labels: np.ndarray, weights=None,
                  num_groups: int | None = None) -> np.ndarray:
    """Group targets ``C_l``: (weighted) mean item table of each group's members.

    Parameters
    ----------
    item_tables : list of numpy.ndarray
        One float array ``(N, d)`` per client (uploaded item embeddings).
    labels : numpy.ndarray
        int ``(n_clients,)`` group of each client.
    weights : numpy.ndarray or None, default None
        ``(n_clients,)`` non-negative client weights (e.g. number of training examples), or
        ``(n_clients, N)`` per-item weights (e.g. per-item interaction counts; items with zero
        total weight in a group fall back to the unweighted group mean). ``None`` = equal.
    num_groups : int or None, default None
        ``g``; default ``labels.max() + 1``.

    Returns
    -------
    numpy.ndarray
        float32 ``(g, N, d)``; rows of groups without members are NaN (skip them:
        :func:`train_fusion` refuses non-finite targets).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(item_tables) != labels.size:
        raise ValueError(f"{len(item_tables)} item tables but {labels.size} labels")
    if labels.size == 0:
        raise ValueError("no item tables: at least one client must have replied")
    stack = np.stack([np.asarray(t, dtype=np.float64) for t in item_tables])  # (n, N, d)
    if stack.ndim != 3:
        raise ValueError(f"item tables must be 2-D (N, d), got {stack.shape[1:]}")
    g = int(labels.max()) + 1 if num_groups is None else int(num_groups)
    if labels.min() < 0 or labels.max() >= g:
        raise ValueError(f"labels must be in 0..{g - 1}, got {labels.min()}..{labels.max()}")
    n, num_items, _ = stack.shape
    if weights is None:
        w = np.ones((n, num_items))
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape == (n,):
            w = np.repeat(w[:, None], num_items, 1)
        elif w.shape != (n, num_items):
            raise ValueError(f"weights must have shape ({n},) or ({n}, {num_items}), got {w.shape}")
        if np.any(w < 0) or not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite and non-negative")
    out = np.full((g, num_items, stack.shape[2]), np.nan)
    for l in np.unique(labels):
        members = labels == l
        wl = w[members]                                            # (n_l, N)
        total = wl.sum(0)
        wl = np.where(total[None, :] > 0, wl, 1.0)                 # zero-weight items: plain mean
        out[l] = weighted_mean(list(stack[members]), wl, divide_last=True)
    return out.astype(np.float32)


def _to_tensors(modalities, masks):
    mods = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in modalities.items()}
    if masks is None:
        return mods, None
    return mods, {k: torch.as_tensor(v, dtype=torch.bool) for k, v in masks.items()
                  if v is not None}


def train_fusion(module: FusionModule, modalities: Mapping[str, torch.Tensor], masks: Masks,
                 targets, group_ids: Sequence[int], epochs: int = 5, lr: float = 1e-2,
                 optimizer: torch.optim.Optimizer | None = None) -> list[float]:
    """Fit ``E_G`` and ``phi`` to the group targets: ``mean_{l in group_ids} MSE(Q_l, C_l)``.

    Full-batch training (all items at once), ``epochs`` optimiser steps. First sets the
    module's output affine from these targets (:meth:`FusionModule.set_target_stats`), then
    minimises the MSE in standardised units (divided by the targets' variance).

    Parameters
    ----------
    module : FusionModule
    modalities : mapping of str to torch.Tensor or numpy.ndarray
        float ``(N, d_m)`` per modality.
    masks : mapping of str to torch.Tensor or None
        bool ``(N,)`` per modality (True = present).
    targets : torch.Tensor or numpy.ndarray
        float ``(g, N, d)`` from :func:`group_targets` (rows of ``group_ids`` must be finite).
    group_ids : sequence of int
        Groups with members this round; the others are skipped in the loss.
    epochs : int, default 5
    lr : float, default 1e-2
        Adam learning rate (ignored when ``optimizer`` is given).
    optimizer : torch.optim.Optimizer or None
        Pass one to keep optimiser state across rounds.

    Returns
    -------
    list of float
        Loss before each step (length ``epochs``).
    """
    ids = [int(l) for l in group_ids]
    if not ids:
        return []
    mods, msk = _to_tensors(modalities, masks)
    tgt = torch.as_tensor(np.asarray(targets) if not torch.is_tensor(targets) else targets,
                          dtype=torch.float32)[ids]
    if not torch.isfinite(tgt).all():
        raise ValueError(f"targets of groups {ids} contain NaN/inf: a listed group has no "
                         "members this round; pass only groups with members as group_ids")
    opt = optimizer or torch.optim.Adam(module.parameters(), lr=lr)
    module.set_target_stats(tgt)
    scale2 = float(module.target_scale) ** 2
    module.train()
    history = []
    for _ in range(int(epochs)):
        opt.zero_grad(set_to_none=True)
        q = module(mods, msk, ids)
        loss = torch.nn.functional.mse_loss(q, tgt)  # equal-size groups: mean of per-group MSE
        (loss / scale2).backward()                   # in standardised units
        opt.step()
        history.append(float(loss.detach()))
    module.eval()
    return history


def fuse(module: FusionModule, modalities: Mapping[str, torch.Tensor], masks: Masks = None,
         group_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Group item features ``Q`` without gradients.

    Parameters
    ----------
    module : FusionModule
    modalities : mapping of str to torch.Tensor or numpy.ndarray
        float ``(N, d_m)``.
    masks : mapping of str to torch.Tensor or None
        bool ``(N,)`` per modality.
    group_ids : sequence of int or None
        Default: all groups.

    Returns
    -------
    torch.Tensor
        float32 ``(len(group_ids), N, d)`` (``(g, N, d)`` by default).
    """
    mods, msk = _to_tensors(modalities, masks)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        q = module(mods, msk, group_ids)
    module.train(was_training)
    return q
