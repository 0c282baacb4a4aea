"""Typed run configuration, read once at the app entry points.

Every key is declared, with its one default, in ``pyproject.toml`` under
``[tool.flwr.app.config]``. Flower hands the merged run config to the ServerApp and ClientApp
as ``context.run_config``; :meth:`RunConfig.from_mapping` turns it into a frozen dataclass
with explicit casts and checks, which is what the rest of the code receives.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A run-config key is missing, unknown, or has a bad value."""


BACKBONE_CHOICES = ("fedmf", "fedncf", "pfedrec", "fedrap", "fedpergnn")
METHOD_CHOICES = ("base", "gfmfr", "fedsllm")
AGGREGATION_CHOICES = ("fedavg", "mean", "itemwise")
PROTOCOL_CHOICES = ("both", "full", "sampled")
DEVICE_CHOICES = ("cpu", "cuda")
#: How the split orders a user's ratings with equal timestamps (fedmm.data.split, step 4).
TIE_CHOICES = ("file-order", "item-id")
#: Keys whose default is not what fedmm did before the key existed: a run saved before then
#: (its config.json lacks the key) is resumed with the old behaviour (its split), not the default.
PRE_KEY_BEHAVIOUR = {"split-ties": "item-id"}
OPTIMIZER_CHOICES = ("", "sgd", "adam")
CENTRAL_TRAINER_CHOICES = ("best", "groups", "adam")
#: Parameter groups with their own optimiser keys (fedmm.models.optim.GROUPS).
OPTIM_GROUPS = ("items", "local_items", "shared", "private")


def cast_value(key: str, raw: Any, kind: str) -> Any:
    """Explicit cast of one run-config value to ``kind`` (``str``/``int``/``float``/``bool``).

    Booleans are not numbers here, ints must be whole, floats finite.

    Raises
    ------
    ConfigError
        Naming ``key`` when ``raw`` cannot be cast.
    """
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                return raw.strip().lower() == "true"
            raise ValueError(raw)
        if kind in ("int", "float") and isinstance(raw, bool):
            raise ValueError(raw)
        if kind == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if kind == "float":
            out = float(raw)
            if not math.isfinite(out):
                raise ValueError(raw)
            return out
        return str(raw).strip()
    except (TypeError, ValueError):
        raise ConfigError(f"run-config key '{key}' = {raw!r} is not a valid {kind}") from None


def comma_list(raw: Any) -> tuple[str, ...]:
    """``"Text, kg,text"`` -> ``("text", "kg")`` (lower-cased, de-duplicated, order kept)."""
    return tuple(dict.fromkeys(m.strip().lower() for m in str(raw).split(",") if m.strip()))


def int_list(raw: Any) -> tuple[int, ...]:
    """``"20,5,10"`` -> ``(5, 10, 20)``."""
    return tuple(sorted({int(x) for x in str(raw).split(",") if x.strip()}))


class ConfigSection:
    """Typed section of the run config, read once at the entry point (mixin for frozen
    dataclasses). Field ``foo_bar`` is the key ``PREFIX + "foo-bar"`` (a trailing ``_``, as in
    ``lambda_``, is dropped). Fields are ``str``/``int``/``float``/``bool``, or are named in
    ``PARSERS`` (field -> (parser, what the value must be)). Subclasses put range checks in
    :meth:`check` and build their errors with :meth:`bad`.
    """

    PREFIX: ClassVar[str] = ""
    PARSERS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], str]]] = {}
    #: Fields that hold a nested section (field -> section class), read from the same mapping.
    NESTED: ClassVar[Mapping[str, type]] = {}

    @classmethod
    def key(cls, field_name: str) -> str:
        """Run-config key of a field (``lambda_schedule`` -> ``<prefix>lambda-schedule``)."""
        return cls.PREFIX + field_name.rstrip("_").replace("_", "-")

    @classmethod
    def keys(cls) -> list[str]:
        """Every run-config key this section reads (nested sections' keys included)."""
        out: list[str] = []
        for f in fields(cls):
            nested = cls.NESTED.get(f.name)
            out.extend(nested.keys() if nested is not None else [cls.key(f.name)])
        return out

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]):
        """Read, cast and check this section from a run-config mapping (hyphenated keys).
        Keys of other sections are ignored.

        Raises
        ------
        ConfigError
            A key is missing, cannot be cast, or is out of range (the message names it).
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in cls.NESTED:
                values[f.name] = cls.NESTED[f.name].from_mapping(cfg)
                continue
            key = cls.key(f.name)
            if key not in cfg:
                raise ConfigError(
                    f"run-config key '{key}' is missing; declare it in pyproject.toml "
                    f"[tool.flwr.app.config] or pass it with --run-config \"{key}=...\"")
            raw = cfg[key]
            if f.name in cls.PARSERS:
                parse, what = cls.PARSERS[f.name]
                try:
                    values[f.name] = parse(raw)
                except (TypeError, ValueError):
                    raise ConfigError(f"run-config key '{key}' = {raw!r} is not a valid "
                                      f"{what}") from None
            else:
                values[f.name] = cast_value(key, raw, str(f.type))
        return cls(**values)

    def __post_init__(self) -> None:
        # Every construction is checked: from_mapping and direct use (GFMFRConfig(groups=0)).
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the key when a value is out of range."""

    def bad(self, name: str, why: str) -> ConfigError:
        """The error for field ``name`` (or its hyphenated key): key, value and ``why``."""
        attr = name.replace("-", "_")
        if not hasattr(self, attr):
            attr += "_"
        return ConfigError(f"run-config key '{self.key(attr)}' = {getattr(self, attr)!r}: {why}")


@dataclass(frozen=True)
class LocalSettings(ConfigSection):
    """What one client's local training and evaluation read from the run config (nested in
    :class:`RunConfig` as ``cfg.local``). Field ``foo_bar`` is the key ``foo-bar``."""

    local_epochs: int
    items_optimizer: str
    items_lr: float
    local_items_optimizer: str
    local_items_lr: float
    shared_optimizer: str
    shared_lr: float
    private_optimizer: str
    private_lr: float
    weight_decay: float
    batch_size: int
    num_negatives: int
    device: str
    ldp_delta: float
    pad_items: int
    train_eval: bool
    eval_protocol: str
    num_eval_negatives: int
    topk: tuple[int, ...]
    seed: int

    PARSERS: ClassVar = {"topk": (int_list, "comma-separated list of integers")}

    @classmethod
    def make(cls, **overrides: Any) -> "LocalSettings":
        """Settings for code that drives a client without a run config (tests): pyproject's
        values except ``local_epochs = 1`` (pyproject: 2) — optimisers the backbone's,
        protocol ``both``, top-K 5,10,20,50 — changed by ``overrides`` (field names)."""
        base: dict[str, Any] = dict(
            local_epochs=1, weight_decay=0.0, batch_size=256, num_negatives=4, device="cpu",
            ldp_delta=0.0, pad_items=0, train_eval=False, eval_protocol="both", num_eval_negatives=99, topk=(5, 10, 20, 50), seed=0,
            **{f"{g}_optimizer": "" for g in OPTIM_GROUPS}, **{f"{g}_lr": 0.0 for g in OPTIM_GROUPS})
        base.update(overrides)
        return cls(**base)

    def check(self) -> None:
        bad = self.bad
        for key, choices in (("eval-protocol", PROTOCOL_CHOICES), ("device", DEVICE_CHOICES)):
            if getattr(self, key.replace("-", "_")) not in choices:
                raise bad(key, f"choose one of {list(choices)}")
        for key in ("local-epochs", "batch-size", "num-eval-negatives"):
            if getattr(self, key.replace("-", "_")) <= 0:
                raise bad(key, "must be > 0")
        for group in OPTIM_GROUPS:
            if getattr(self, f"{group}_optimizer") not in OPTIMIZER_CHOICES:
                raise bad(f"{group}_optimizer", f"choose one of {list(OPTIMIZER_CHOICES)} "
                                                "(\"\" = the backbone's default)")
            if getattr(self, f"{group}_lr") < 0:
                raise bad(f"{group}_lr", "must be > 0, or 0 for the backbone's default")
        if self.num_negatives < 1:
            raise bad("num-negatives", "must be >= 1")
        if self.weight_decay < 0 or self.ldp_delta < 0:
            raise bad("weight-decay" if self.weight_decay < 0 else "ldp-delta", "must be >= 0")
        if self.pad_items < 0:
            raise bad("pad-items", "must be >= 0 (number of random unrated items whose item-table "
                                   "rows are also changed per round; 0 = no padding)")
        if not self.topk or min(self.topk) < 1:
            raise bad("topk", "give comma-separated positive integers, e.g. \"5,10,20,50\"")

    @property
    def optimizers(self) -> tuple[tuple[str, str, float], ...]:
        """``(group, optimizer or "", lr or 0)`` per parameter group: what overrides the
        backbone's default local optimisers (:mod:`fedmm.models.optim`)."""
        return tuple((g, getattr(self, f"{g}_optimizer"), getattr(self, f"{g}_lr"))
                     for g in OPTIM_GROUPS)

    @property
    def protocols(self) -> tuple[str, ...]:
        """Evaluation protocols that run: ``("full", "sampled")`` or one of them."""
        return ("full", "sampled") if self.eval_protocol == "both" else (self.eval_protocol,)

    def metric_names(self, split: str) -> list[str]:
        """Names of the metrics reported for ``split`` (``"valid"`` or ``"test"``), e.g.
        ``"test_full_hr@10"``, ``"valid_sampled_ndcg@50"``."""
        return [f"{split}_{p}_{m}@{k}" for p in self.protocols for m in ("hr", "ndcg") for k in self.topk]


@dataclass(frozen=True)
class RunConfig(ConfigSection):
    """All run-config keys, typed. Field ``foo_bar`` is the TOML key ``foo-bar``; the keys of
    local training and evaluation are in the nested :class:`LocalSettings` ``local``
    (``cfg.local.batch_size``), with ``seed`` and ``device`` also readable here.

    See ``pyproject.toml`` ``[tool.flwr.app.config]`` for defaults and one-line docs.
    """

    # data
    dataset: str
    rating_threshold: float
    min_interactions: int
    split_ties: str
    cache_dir: str
    # model
    backbone: str
    embedding_dim: int
    same_init: bool
    method: str
    # federation
    num_server_rounds: int
    fraction_train: float
    aggregation: str
    min_train_replies: int
    max_eval_failures: float
    round_timeout: float
    node_timeout: float
    sim_indexed_dispatch: bool
    # secure aggregation (SecAgg+, fedmm/secagg.py)
    secagg: bool
    secagg_num_shares: float
    secagg_threshold: float
    secagg_clipping_range: float
    secagg_quantization_range: int
    secagg_modulus_range: int
    secagg_max_weight: float
    secagg_max_count: float
    secagg_eval: bool
    # local training and evaluation (seed, device, optimisers, negatives, top-K, ...)
    local: LocalSettings
    # evaluation schedule and selection
    eval_every: int
    select_metric: str
    centralised_epochs: int
    centralised_lr: float
    centralised_trainer: str
    # run
    out_dir: str
    run_name: str
    threads: int
    # checkpoint and resume
    checkpoint_every: int
    client_state_dir: str
    resume_round: int

    NESTED: ClassVar = {"local": LocalSettings}

    @property
    def seed(self) -> int:
        """The run's seed (``seed``; it lives in :attr:`local`)."""
        return self.local.seed

    @property
    def device(self) -> str:
        """``device`` (it lives in :attr:`local`)."""
        return self.local.device

    # ------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`ConfigError` naming the key when a value is out of range."""
        bad = self.bad
        for key, choices in (("backbone", BACKBONE_CHOICES), ("method", METHOD_CHOICES),
                             ("aggregation", AGGREGATION_CHOICES)):
            if getattr(self, key.replace("-", "_")) not in choices:
                raise bad(key, f"choose one of {list(choices)}")
        for key in ("embedding-dim", "num-server-rounds", "eval-every", "threads"):
            if getattr(self, key.replace("-", "_")) <= 0:
                raise bad(key, "must be > 0")
        if not 0.0 < self.fraction_train <= 1.0:
            raise bad("fraction-train", "must be in (0, 1]")
        if self.min_train_replies < 1:
            raise bad("min-train-replies", "must be >= 1")
        if not 0.0 <= self.max_eval_failures < 1.0:
            raise bad("max-eval-failures", "must be in [0, 1)")
        for key in ("round-timeout", "node-timeout"):
            if getattr(self, key.replace("-", "_")) <= 0:
                raise bad(key, "must be > 0 seconds")
        if self.centralised_epochs < 0:
            raise bad("centralised-epochs", "must be >= 0 (0 skips the centralised row)")
        if self.centralised_lr <= 0:
            raise bad("centralised-lr", "must be > 0")
        if self.centralised_trainer not in CENTRAL_TRAINER_CHOICES:
            raise bad("centralised-trainer", f"choose one of {list(CENTRAL_TRAINER_CHOICES)}")
        if self.min_interactions < 3:
            raise bad("min-interactions", "must be >= 3 (leave-one-out needs train, valid and test)")
        if self.split_ties not in TIE_CHOICES:
            raise bad("split-ties", f"choose one of {list(TIE_CHOICES)}")
        if self.select_metric not in self.metric_names(split="valid"):
            raise bad("select-metric", f"must be one of the validation metrics this protocol "
                                       f"produces: {self.metric_names(split='valid')}")
        for key in ("checkpoint-every", "resume-round"):
            if getattr(self, key.replace("-", "_")) < 0:
                raise bad(key, "must be >= 0 (0 = off / a fresh run)")
        if self.resume_round and not self.run_name:
            raise bad("resume-round", "a resumed run needs run-name (the directory under "
                                      "out-dir it continues); use run.py --resume <run-dir>")
        if any(c in self.run_name for c in "/\\") or self.run_name in (".", ".."):
            raise bad("run-name", "must be a plain directory name (no path separators)")
        if self.secagg_eval and not self.secagg:
            raise bad("secagg-eval", "secure evaluation runs SecAgg+: set secagg = true too")
        if self.secagg:
            if self.method == "gfmfr":
                raise bad("secagg", "GFMFR cannot run under secure aggregation: its server "
                                    "clusters clients by each one's uploaded prediction function "
                                    "P_u and builds each group's targets from its members' own "
                                    "item tables, so it needs every client's upload, not a sum")
            for key in ("secagg-num-shares", "secagg-threshold", "secagg-max-weight",
                        "secagg-max-count"):
                if getattr(self, key.replace("-", "_")) <= 0:
                    raise bad(key, "must be > 0 (<= 1: a fraction, > 1: a number)"
                              if key in ("secagg-num-shares", "secagg-threshold") else "must be > 0")
            try:
                self.secagg_params.check()
            except ValueError as exc:
                raise ConfigError(f"secure aggregation (secagg-* keys): {exc}") from None

    @property
    def secagg_params(self):
        """The :class:`fedmm.secagg.SecAggParams` of the ``secagg-*`` keys."""
        from fedmm.secagg import SecAggParams

        return SecAggParams(num_shares=self.secagg_num_shares,
                            reconstruction_threshold=self.secagg_threshold,
                            clipping_range=self.secagg_clipping_range,
                            quantization_range=self.secagg_quantization_range,
                            modulus_range=self.secagg_modulus_range,
                            max_weight=self.secagg_max_weight,
                            max_count=self.secagg_max_count)

    # ------------------------------------------------------------------------------------
    def metric_names(self, split: str) -> list[str]:
        """Names of the metrics reported for ``split`` (see :meth:`LocalSettings.metric_names`)."""
        return self.local.metric_names(split)

    def to_dict(self) -> dict[str, Any]:
        """Hyphenated-key dict of every key (nested ones flattened), JSON-serialisable."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.NESTED:
                out.update({value.key(g.name): (",".join(map(str, v)) if g.name == "topk" else v)
                            for g in fields(value) for v in [getattr(value, g.name)]})
            else:
                out[self.key(f.name)] = value
        return out


def load_app_config(pyproject: str | Path) -> dict[str, Any]:
    """Return the ``[tool.flwr.app.config]`` table of a ``pyproject.toml`` (the defaults)."""
    path = Path(pyproject)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run from the fedmm app directory or pass its path")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    try:
        return dict(data["tool"]["flwr"]["app"]["config"])
    except KeyError:
        raise ConfigError(f"{path}: has no [tool.flwr.app.config] table") from None


def merge_overrides(defaults: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Apply ``overrides`` to ``defaults``; a key that is not declared is an error naming ``source``."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{source}: unknown run-config key(s) {unknown}; known keys are "
                          f"{sorted(defaults)}")
    out = dict(defaults)
    out.update(overrides)
    return out


def parse_kv_overrides(text: str) -> dict[str, Any]:
    """Parse ``"key=value key2=value2"`` the way ``flwr run --run-config`` does (TOML values)."""
    out: dict[str, Any] = {}
    for token in _split_tokens(text):
        if "=" not in token:
            raise ConfigError(f"--run-config: '{token}' is not key=value")
        key, value = token.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # bare string, as flwr accepts
    return out


def _split_tokens(text: str) -> list[str]:
    import shlex

    return shlex.split(text)


def load_toml_overrides(path: str | Path) -> dict[str, Any]:
    """Read a ``conf/<name>.toml`` override file: a flat table of run-config keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {p}: file not found")
    try:
        with p.open("rb") as fh:
            return dict(tomllib.load(fh))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {p}: not valid TOML ({exc})") from None
