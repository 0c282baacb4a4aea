"""Local optimisers as part of the backbone contract (no Flower import).

Every backbone splits its parameters into four **groups** (some may be empty):

* ``items``       — the shared item table ``item_emb`` (uploaded and aggregated);
* ``local_items`` — a private item table (FedRAP's ``item_local``, ``D_u``);
* ``shared``      — the other shared layers (FedNCF's MLP tower, FedPerGNN's graph layer);
* ``private``     — the rest of the user's private part (user embedding, score function).

and declares, following its paper's official code where there is one, a default optimiser
per group (:class:`GroupOptim`) and its **update steps**: the sequence of forward/backward
passes made on each batch, each stepping only the groups it names. PFedRec's official engine,
for example, first steps the score function and then, with a second forward pass, the item
table: ``(("private",), ("items",))``. A single joint step is ``(("items", "shared",
"private"),)``.

Run-config keys ``<group>-optimizer`` / ``<group>-lr`` (``local-items-...`` for
``local_items``) override a group's default
(:func:`resolve_optimizers`); the defaults themselves live only in the backbone classes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

#: The parameter groups every backbone uses (some may be empty, e.g. PFedRec has no ``shared``).
GROUPS: tuple[str, ...] = ("items", "local_items", "shared", "private")
#: The groups that are shared (uploaded and aggregated); the others stay on the client.
SHARED_GROUPS: tuple[str, ...] = ("items", "shared")
#: Optimisers a group may use.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass(frozen=True)
class GroupOptim:
    """Optimiser of one parameter group.

    Parameters
    ----------
    name : {"sgd", "adam"}
        Plain SGD (no momentum) or Adam. A client rebuilds its optimisers every round (it keeps
        no optimiser state between rounds), so Adam's moments start from zero each round.
    lr : float
        Learning rate, ``> 0``.
    weight_decay : float, default 0.0
        L2 penalty of the optimiser, ``>= 0``.
    clip : float, default 0.0
        If ``> 0``, the group's gradient is rescaled to at most this L2 norm (over all the
        group's parameters, ``torch.nn.utils.clip_grad_norm_``) before each step, as the
        official FedPerGNN code's Keras ``clipnorm``; ``0`` = no clipping.
    """

    name: str
    lr: float
    weight_decay: float = 0.0
    clip: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {list(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"optimizer learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.clip < 0:
            raise ValueError(f"gradient clip norm must be >= 0 (0 = off), got {self.clip}")

    def build(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh torch optimiser over ``params``."""
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


def resolve_optimizers(defaults: Mapping[str, GroupOptim],
                       overrides: Mapping[str, tuple[str, float]]) -> dict[str, GroupOptim]:
    """Apply run-config overrides to a backbone's default optimisers.

    Parameters
    ----------
    defaults : mapping str -> GroupOptim
        The backbone's defaults, one per non-empty group.
    overrides : mapping str -> (str, float)
        Group -> (optimizer name or ``""``, learning rate or ``0``); ``""`` / ``0`` keep the
        default. Groups the backbone does not have are ignored.
    weight_decay is kept from the default unless the override changes the optimiser.

    Returns
    -------
    dict str -> GroupOptim
    """
    out = dict(defaults)
    for group, (name, lr) in overrides.items():
        if group not in out:
            continue
        cur = out[group]
        if name:
            cur = replace(cur, name=name)
        if lr:
            cur = replace(cur, lr=float(lr))
        out[group] = cur
    return out


def item_table_lr(num_items: int, lr: float = 0.1, eta: float = 80.0) -> float:
    """The item-table learning rate of the PFedRec family of official engines
    (Zhangcx19/IJCAI-23-PFedRec and GPFedRec ``engine.py``): ``lr * num_items * eta``.

    The loss is a batch mean, so one item row gets about ``1 / batch`` of a batch's gradient,
    and the server's average over the round's clients divides each row's change again; the
    ``num_items * eta`` factor restores a per-item step of useful size. Defaults are the
    official ``lr = 0.1`` and ``lr_eta = 80``."""
    return float(lr * num_items * eta)


class GroupedOptimizer:
    """The per-group optimisers of one model for one round, stepped in the model's update steps.

    Parameters
    ----------
    groups : mapping str -> list of nn.Parameter
        The model's parameter groups (:meth:`FedRecModel.param_groups`).
    optims : mapping str -> GroupOptim
        One optimiser per non-empty group.
    steps : sequence of sequence of str
        The update steps (see module docstring).
    weight_decay : float, default 0.0
        Added to every group's own weight decay (the ``weight-decay`` run-config key).

    Raises
    ------
    ValueError
        A step names an unknown group, or a non-empty group has no optimiser or is in no step.
    """

    def __init__(self, groups: Mapping[str, Sequence[nn.Parameter]], optims: Mapping[str, GroupOptim],
                 steps: Sequence[Sequence[str]], weight_decay: float = 0.0) -> None:
        nonempty = {g for g, ps in groups.items() if len(ps)}
        stepped = {g for step in steps for g in step}
        unknown = stepped - set(groups)
        if unknown:
            raise ValueError(f"update steps name unknown groups {sorted(unknown)}; groups are {list(groups)}")
        missing = nonempty - set(optims)
        if missing:
            raise ValueError(f"groups {sorted(missing)} have parameters but no optimizer")
        unstepped = nonempty - stepped
        if unstepped:
            raise ValueError(f"groups {sorted(unstepped)} have parameters but no update step")
        self.steps = [tuple(g for g in step if g in nonempty) for step in steps]
        self.steps = [s for s in self.steps if s]
        self.optimizers = {
            g: replace(optims[g], weight_decay=optims[g].weight_decay + weight_decay).build(list(groups[g]))
            for g in nonempty}
        self._clip = {g: (list(groups[g]), optims[g].clip) for g in nonempty if optims[g].clip > 0}

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, groups: Sequence[str]) -> None:
        """Step the optimisers of ``groups`` (after ``backward``), clipping first where the
        group's :attr:`GroupOptim.clip` is set."""
        for g in groups:
            if g in self._clip:
                params, norm = self._clip[g]
                torch.nn.utils.clip_grad_norm_(params, norm)
            self.optimizers[g].step()
