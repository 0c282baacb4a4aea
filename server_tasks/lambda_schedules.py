"""Schedules of GFMFR's distillation weight ``lambda``.

A client's loss is ``L = L_rec + lambda_t * L_dis`` with ``L_dis = KL(E_M_l || own prediction)``.
Each schedule is a small frozen dataclass called as
``schedule(server_round, rec_loss, dis_loss, prev_lambda) -> lambda_t`` and is pure (no state:
the caller keeps ``prev_lambda``, e.g. in the client's state). Notation: ``t`` = server round
(1-based, as Flower counts), ``b`` = ``base``, ``a_t = rec_loss / max(dis_loss, eps)`` (the
scale-alignment ratio; ``a_t = 1`` when either loss is unknown, e.g. before the first local
epoch), ``r_t = min(1, t / ramp_rounds)`` (linear ramp), ``beta`` in ``[0, 1)``.

==================================  ===========================================================
name                                formula
==================================  ===========================================================
``constant``                        ``lambda_t = b``
``scale_align``                     ``lambda_t = b * a_t``  (so ``lambda_t * L_dis = b * L_rec``)
``smooth``                          ``lambda_t = beta * lambda_{t-1} + (1 - beta) * b * a_t``
``progressive``                     ``lambda_t = b * r_t``
``smooth_progressive``              ``lambda_t = beta * lambda_{t-1} + (1 - beta) * b * r_t``
``smooth_progressive_scale_align``  ``lambda_t = beta * lambda_{t-1} + (1 - beta) * b * r_t * a_t``
==================================  ===========================================================

``smooth_progressive`` is the paper's "Ours" (smooth coefficient + progressive scale) and the
default: the paper states no rec-loss / dis-loss ratio for it, and with that ratio lambda went
to 0 on FedRAP and to the cap on FedNCF (docs/results.md, section 2.2). The ratio lives in
``scale_align``, ``smooth`` and ``smooth_progressive_scale_align`` (the default before issue 14,
kept so earlier runs can be reproduced). The smoothed schedules use the un-smoothed target when
``prev_lambda`` is ``None`` (first round). Every result is clipped to ``[0, max_value]``. The
exact constants of the paper are not published in a form we could check; these formulas are
our reading of the schedule names and are documented here so results can be reproduced. No
Flower import here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields


def _ratio(rec_loss: float | None, dis_loss: float | None, eps: float) -> float:
    """``a_t = rec_loss / max(dis_loss, eps)``; 1 when a loss is unknown or non-finite."""
    if rec_loss is None or dis_loss is None:
        return 1.0
    rec, dis = float(rec_loss), float(dis_loss)
    if not (math.isfinite(rec) and math.isfinite(dis)) or rec < 0 or dis < 0:
        return 1.0
    return rec / max(dis, eps)


def _ramp(server_round: int, ramp_rounds: int) -> float:
    """``r_t = min(1, t / ramp_rounds)`` (0 at round 0)."""
    return min(1.0, max(0, int(server_round)) / ramp_rounds)


@dataclass(frozen=True)
class _Schedule:
    """Common fields: ``base`` (``b``), ``max_value`` (upper clip), ``eps`` (loss floor)."""

    base: float = 1.0
    max_value: float = 100.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.base < 0 or not math.isfinite(self.base):
            raise ValueError(f"lambda base must be finite and >= 0, got {self.base}")
        if self.max_value <= 0:
            raise ValueError(f"lambda max_value must be > 0, got {self.max_value}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def _clip(self, value: float) -> float:
        return float(min(max(value, 0.0), self.max_value))

    def _scaled(self, rec_loss, dis_loss) -> float:
        """``b * a_t``."""
        return self.base * _ratio(rec_loss, dis_loss, self.eps)

    def target(self, server_round: int, rec_loss, dis_loss) -> float:
        """Un-smoothed value at round ``server_round``."""
        raise NotImplementedError

    def __call__(self, server_round: int, rec_loss: float | None = None,
                 dis_loss: float | None = None, prev_lambda: float | None = None) -> float:
        """``lambda_t`` for this round.

        Parameters
        ----------
        server_round : int
            ``t`` (1-based).
        rec_loss : float or None
            Recommendation loss ``L_rec`` (e.g. last local epoch's mean BCE).
        dis_loss : float or None
            Distillation loss ``L_dis`` measured with the same data.
        prev_lambda : float or None
            ``lambda_{t-1}``; ``None`` in the first round.

        Returns
        -------
        float
        """
        return self._clip(self.target(server_round, rec_loss, dis_loss))


@dataclass(frozen=True)
class Constant(_Schedule):
    """``lambda_t = base``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self.base


@dataclass(frozen=True)
class ScaleAlign(_Schedule):
    """ScaleAlign: ``lambda_t = base * rec_loss / max(dis_loss, eps)``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self._scaled(rec_loss, dis_loss)


@dataclass(frozen=True)
class _Smoothed(_Schedule):
    """Exponential smoothing with the previous round's value (``beta``)."""

    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"smoothing beta must be in [0, 1), got {self.beta}")

    def __call__(self, server_round, rec_loss=None, dis_loss=None, prev_lambda=None) -> float:
        target = self.target(server_round, rec_loss, dis_loss)
        if prev_lambda is None or not math.isfinite(float(prev_lambda)):
            return self._clip(target)
        return self._clip(self.beta * float(prev_lambda) + (1.0 - self.beta) * target)


@dataclass(frozen=True)
class _Ramped(_Schedule):
    """Linear ramp over ``ramp_rounds`` rounds."""

    ramp_rounds: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.ramp_rounds) < 1:
            raise ValueError(f"ramp_rounds must be >= 1, got {self.ramp_rounds}")

    def _ramp(self, server_round: int) -> float:
        return _ramp(server_round, int(self.ramp_rounds))


@dataclass(frozen=True)
class SmoothCoef(_Smoothed):
    """SmoothCoef: ``lambda_t = beta * lambda_{t-1} + (1 - beta) * base * a_t``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self._scaled(rec_loss, dis_loss)


@dataclass(frozen=True)
class ProgressiveScale(_Ramped):
    """ProgressiveScale: ``lambda_t = base * min(1, t / ramp_rounds)``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self.base * self._ramp(server_round)


@dataclass(frozen=True)
class SmoothProgressive(_Ramped, _Smoothed):
    """Smooth+Progressive (the paper's "Ours", default), no loss ratio:
    ``lambda_t = beta * lambda_{t-1} + (1 - beta) * base * min(1, t / ramp_rounds)``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self.base * self._ramp(server_round)


@dataclass(frozen=True)
class SmoothProgressiveScaleAlign(_Ramped, _Smoothed):
    """Smooth+Progressive with the scale-alignment ratio (the default before issue 14):
    ``lambda_t = beta * lambda_{t-1} + (1 - beta) * base * min(1, t / ramp_rounds) * a_t``."""

    def target(self, server_round, rec_loss, dis_loss) -> float:
        return self._ramp(server_round) * self._scaled(rec_loss, dis_loss)


#: Canonical schedule names (run-config key ``lambda-schedule``) -> class.
SCHEDULES = {
    "constant": Constant,
    "scale_align": ScaleAlign,
    "smooth": SmoothCoef,
    "progressive": ProgressiveScale,
    "smooth_progressive": SmoothProgressive,
    "smooth_progressive_scale_align": SmoothProgressiveScaleAlign,
}
_ALIASES = {
    "constant": "constant", "const": "constant",
    "scalealign": "scale_align",
    "smooth": "smooth", "smoothcoef": "smooth",
    "progressive": "progressive", "progressivescale": "progressive",
    "smoothprogressive": "smooth_progressive", "smoothprogressivescale": "smooth_progressive",
    "ours": "smooth_progressive",
    "smoothprogressivescalealign": "smooth_progressive_scale_align",
}


def make_schedule(name: str, **params) -> _Schedule:
    """Build a schedule by name.

    Parameters
    ----------
    name : str
        One of :data:`SCHEDULES` or the paper's names (``"ScaleAlign"``, ``"SmoothCoef"``,
        ``"ProgressiveScale"``, ``"Smooth+Progressive"`` / ``"Ours"``); case, ``_``, ``-``,
        ``+`` and spaces are ignored.
    **params
        Fields of the schedule: ``base``, ``max_value``, ``eps`` and, where they apply,
        ``beta`` and ``ramp_rounds``.

    Returns
    -------
    callable
        ``schedule(server_round, rec_loss, dis_loss, prev_lambda) -> float``.
    """
    key = _ALIASES.get(re.sub(r"[^a-z]", "", str(name).lower()))
    if key is None:
        raise ValueError(f"lambda-schedule: unknown schedule {name!r}; expected one of "
                         f"{list(SCHEDULES)} (or ScaleAlign, SmoothCoef, ProgressiveScale, "
                         "Smooth+Progressive, Ours)")
    cls = SCHEDULES[key]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"lambda-schedule {key!r} does not take {unknown}; "
                        f"its parameters are {sorted(allowed)}")
    return cls(**params)
