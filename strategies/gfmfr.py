"""GFMFR strategy: group-wise multimodal fusion on the server, distillation on the clients.

Zhang et al., "Multimodal-enhanced Federated Recommendation: A Group-wise Fusion Approach",
WWW 2026 (arXiv:2509.19955). After the backbone's usual aggregation, each round the server

1. clusters the participating clients into ``g`` groups by their prediction functions ``P_u``
   (:class:`~server_tasks.clustering.GroupTracker`: group identities stay stable across rounds);
2. forms each group's target ``C_l``, the mean item table its members uploaded (weighted like
   the backbone's aggregation: by ``num-examples``, or per item for ``aggregation="itemwise"``);
3. trains the group embedding ``E_G`` and the fusion module ``S_phi`` on
   ``MSE(Q_l, C_l)``, ``Q_l = S_phi({E_m}, E_G[l])``, where ``E_m`` are frozen item-modality
   tables (text: MiniLM on title + genres + year; kg: knowledge graph + genres + year;
   image: EfficientNet-Lite0) encoded once at start-up and cached on disk;
4. builds the group preference ``E_M_l = P̄_l(Q_l)`` with ``P̄_l`` the members' averaged
   prediction function, and sends it with the next train message of every client of group
   ``l`` (a client's group is the one of its latest participation);
5. the client (:mod:`clients.gfmfr`) adds ``lambda * KL(E_M_l || own prediction)`` on its
   batch items to its BCE loss; ``lambda`` comes from a server-side schedule
   (:mod:`server_tasks.lambda_schedules`) fed by the clients' reported losses.

Message contract (for another Flower project's ClientApp; names in :mod:`fedmm.protocol`, on
top of the base contract documented there):

* **train message** — ``"arrays"`` and ``"config"`` as the base strategy; ``"config"`` also
  holds ``gfmfr-lambda-t`` (float, the distillation weight λ_t of this round; the run-config
  key ``gfmfr-lambda`` is the base weight λ the schedule starts from). Clients that belong
  to a group get one more ArrayRecord ``"gfmfr"``:

  - server mode (backbone scorer without a user embedding: PFedRec, FedRAP):
    ``"preference"`` float32 ``(N, 2)``, rows ``[1 - p, p]`` = ``E_M_l`` of the client's group;
  - client mode (scorer with a private user embedding: FedMF, FedNCF, FedPerGNN):
    ``"features"`` float16 ``(N, d)`` = ``Q_l`` and ``"scorer/<key>"`` float32 = the group
    average of each shared scorer parameter (e.g. ``scorer/mlp.0.weight``); the client
    computes ``E_M_l`` with its own user embedding.

  A client that has never been sampled has no group yet: its first train message has no
  ``"gfmfr"`` record (no distillation); its first upload assigns it to a group (it takes part
  in that round's clustering), and from its next sampling on it receives its group's signal.
* **train reply** — as the base strategy, plus: server mode: ArrayRecord ``"extras"`` with
  ``"scorer/<key>"`` for every private scorer key (the personalised score function
  ``P_u`` after local training, e.g. ``scorer/score_fn.weight`` ``(1, d)`` and
  ``scorer/score_fn.bias`` ``(1,)``: uploading it is what GFMFR requires by design);
  client mode: nothing extra (clustering uses the shared parameters already uploaded).
  ``"metrics"`` adds ``rec-loss`` (float, mean batch BCE) and, when the message carried
  ``"gfmfr"``, ``dis-loss`` (float, mean batch KL). The client's user is the one its node
  reported in the query round (GFMFR needs it to track groups; train replies carry no id).

Outputs in the run directory: ``groups.jsonl`` (one line per round:
``{"round": r, "groups": {"<partition id>": group}}``), ``group_dynamics.png`` (written by
:meth:`GFMFR.finish`), and per-round ``gfmfr-*`` fields in ``rounds.jsonl`` (seconds of
clustering / fusion training / preference building, fusion loss, group sizes, lambda,
mean rec/dis losses).
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from logging import INFO
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from clients.gfmfr import KL_ITEM_MODES, ScorerPlan, scorer_plan
from fedmm.config import ConfigSection, comma_list
from fedmm.device import resolve_device
from fedmm.models.base import FedRecModel
from fedmm.protocol import (DIS_LOSS, FEATURES, GFMFR_PAYLOAD, ITEM_COUNTS, KL_ITEMS, PREFERENCE,
                            REC_LOSS, ROUND_LAMBDA, SCORER_PREFIX, TrainReply, dict_to_arrays)
from server_tasks.clustering import METHODS as CLUSTER_METHODS
from server_tasks.clustering import GroupTracker
from server_tasks.modality_cache import MODALITIES, EncoderConfig, item_modalities
from server_tasks.fusion import FUSION_KINDS, fuse, group_targets, make_fusion, train_fusion
from server_tasks.group_pref import average_state, group_preference, signal_diagnostics
from server_tasks.lambda_schedules import SCHEDULES, make_schedule
from strategies.aggregation import ReplyError
from strategies.base import FedRecStrategy

#: Prefix of this method's run-config keys.
KEY_PREFIX = "gfmfr-"


@dataclass(frozen=True)
class GFMFRConfig(ConfigSection):
    """GFMFR's run-config section, typed. Field ``foo_bar`` is the key ``gfmfr-foo-bar``
    (``lambda_`` is ``gfmfr-lambda``); one-line docs live in ``pyproject.toml``. The field
    defaults equal pyproject's (a test checks it), so another project can build
    ``GFMFRConfig(groups=3)`` without fedmm's run config.
    """

    #: Every run-config key this section reads (set below the class from the fields).
    KEYS: ClassVar[tuple[str, ...]] = ()
    PREFIX: ClassVar[str] = KEY_PREFIX
    PARSERS: ClassVar = {"modalities": (comma_list, "comma-separated list")}

    groups: int = 5
    cluster: str = "kmeans"
    fusion: str = "mlp"
    modalities: tuple[str, ...] = ("text", "image", "kg")
    text_encoder: str = ""
    image_encoder: str = ""
    kg_dim: int = 64
    group_dim: int = 16
    hidden: int = 64
    epochs: int = 20
    lr: float = 0.01
    lambda_: float = 0.03
    lambda_schedule: str = "smooth-progressive"
    lambda_beta: float = 0.9
    lambda_ramp: int = 50
    lambda_max: float = 1.0
    plot_users: int = 100
    standardize: bool = False
    min_group_size: int = 1
    kl_items: str = "batch"

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the key when a value is out of range."""
        bad = self.bad
        for name in ("groups", "kg_dim", "group_dim", "hidden", "epochs", "lambda_ramp",
                     "plot_users", "min_group_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.cluster not in CLUSTER_METHODS:
            raise bad("cluster", f"choose one of {list(CLUSTER_METHODS)}")
        if self.fusion not in FUSION_KINDS:
            raise bad("fusion", f"choose one of {list(FUSION_KINDS)}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or unknown:
            raise bad("modalities", f"give a comma-separated subset of {list(MODALITIES)}, "
                                    f"e.g. \"text,kg\"")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "must be > 0")
        if self.kl_items not in KL_ITEM_MODES:
            raise bad("kl_items", f"choose one of {list(KL_ITEM_MODES)}")
        if not (self.lambda_ >= 0 and math.isfinite(self.lambda_)):
            raise bad("lambda_", "must be finite and >= 0")
        if not 0.0 <= self.lambda_beta < 1.0:
            raise bad("lambda_beta", "must be in [0, 1)")
        if not self.lambda_max > 0:
            raise bad("lambda_max", "must be > 0")
        try:
            self.make_schedule()
        except ValueError as exc:
            raise bad("lambda_schedule", f"{exc}") from None

    def make_schedule(self):
        """The lambda schedule: ``schedule(round, rec_loss, dis_loss, prev_lambda) -> float``."""
        kind = type(make_schedule(self.lambda_schedule))
        params = {"base": self.lambda_, "max_value": self.lambda_max, "beta": self.lambda_beta,
                  "ramp_rounds": self.lambda_ramp}
        accepted = {f.name for f in fields(kind)}
        return make_schedule(self.lambda_schedule,
                             **{k: v for k, v in params.items() if k in accepted})

    def schedule_name(self) -> str:
        """Canonical name of the lambda schedule (e.g. ``"smooth_progressive"``)."""
        kind = type(make_schedule(self.lambda_schedule))
        return next(name for name, cls in SCHEDULES.items() if cls is kind)


GFMFRConfig.KEYS = tuple(GFMFRConfig.keys())


# ------------------------------------------------------------------------------------------
# strategy
# ------------------------------------------------------------------------------------------

class GFMFR(FedRecStrategy):
    """The base federated-recommendation strategy plus GFMFR's server side.

    Overrides the hooks ``train_payload``, ``server_update``, ``round_info``, ``finish`` and
    ``configure_train`` (only to add ``gfmfr-lambda`` to the config, then ``super()``).

    Parameters
    ----------
    settings : GFMFRConfig
    modalities : mapping of str to (numpy.ndarray, numpy.ndarray)
        ``modality -> (features float32 (N, d_m), mask bool (N,))``.
    model : FedRecModel
        A backbone instance (the server's copy): its ``score_vectors`` applies ``P̄_l``
        in server mode; its key lists define what is clustered.
    run_dir : pathlib.Path or None, default None
        Where ``groups.jsonl`` and ``group_dynamics.png`` go (``None``: not written).
    device : str, default "cpu"
        Device of the fusion module.
    modality_notes : mapping of str to str or None
        Dropped/degraded modalities and why (reported in ``final.json``).
    encode_seconds : float, default 0.0
        Time spent encoding modalities at start-up (reported).
    **kwargs
        Keyword arguments of :class:`~strategies.base.FedRecStrategy` (``seed`` seeds the
        fusion module and the clustering).
    """

    def __init__(self, *, settings: GFMFRConfig,
                 modalities: Mapping[str, tuple[np.ndarray, np.ndarray]], model: FedRecModel,
                 run_dir: Path | None = None, device: str = "cpu",
                 modality_notes: Mapping[str, str] | None = None, encode_seconds: float = 0.0,
                 **kwargs: Any) -> None:
        if kwargs.get("secagg") is not None:
            # (RunConfig refuses secagg = true with method = "gfmfr" with the same reason)
            raise ValueError("GFMFR cannot run under secure aggregation: its server clusters "
                             "clients by each one's uploaded prediction function P_u and builds "
                             "each group's targets from its members' own item tables")
        super().__init__(**kwargs)
        seed = int(kwargs.get("seed", 0))
        self.settings = settings
        self.plan: ScorerPlan = scorer_plan(model)
        self.num_items, self.dim = model.num_items, model.dim
        self.num_groups = 1 if settings.cluster == "single" else settings.groups
        self.tracker = GroupTracker(self.num_groups, settings.cluster, seed=seed,
                                    standardize=settings.standardize,
                                    min_size=settings.min_group_size)
        self.device = resolve_device(device)
        for m, (feats, mask) in modalities.items():
            if feats.ndim != 2 or feats.shape[0] != self.num_items or mask.shape != (self.num_items,):
                raise ValueError(f"modality '{m}' has features {feats.shape} and mask {mask.shape}; "
                                 f"expected ({self.num_items}, d) and ({self.num_items},)")
        self._mods = {m: torch.as_tensor(f, dtype=torch.float32, device=self.device)
                      for m, (f, _) in modalities.items()}
        self._masks = {m: torch.as_tensor(k, dtype=torch.bool, device=self.device)
                       for m, (_, k) in modalities.items()}
        self.fusion = make_fusion(settings.fusion, {m: int(f.shape[1]) for m, f in self._mods.items()},
                                  self.num_groups, self.dim, settings.group_dim, settings.hidden,
                                  seed=seed).to(self.device)
        self._opt = torch.optim.Adam(self.fusion.parameters(), lr=settings.lr)
        self.schedule = settings.make_schedule()
        self._scorer = copy.deepcopy(model).cpu().eval().requires_grad_(False)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.modality_notes = dict(modality_notes or {})
        self.encode_seconds = float(encode_seconds)
        self._group_of_user: dict[int, int] = {}
        self._pbar: dict[int, dict[str, torch.Tensor]] = {}   # group -> averaged scorer state
        self._signals: dict[int, ArrayRecord] = {}            # group -> payload record
        self._sent_items: np.ndarray | None = None
        self._losses: tuple[float | None, float | None] = (None, None)
        self._lambda: float | None = None
        self._info: dict[str, Any] = {}
        self._seconds: list[float] = []

    @classmethod
    def build(cls, common: Mapping[str, Any], cfg, run_config: Mapping[str, Any], data: Any,
              run_dir: Path | None, model: FedRecModel) -> "GFMFR":
        """Read the ``gfmfr-*`` keys once, encode the item modalities, build the strategy.

        Parameters
        ----------
        common : mapping
            Base-strategy keyword arguments (see :func:`strategies.factory.build_strategy`).
        cfg : fedmm.config.RunConfig
        run_config : mapping
            The raw run config (``gfmfr-*`` keys are read from it).
        data : fedmm.data.split.FederatedData
        run_dir : pathlib.Path or None
        model : FedRecModel
        """
        from fedmm.data.split import default_cache_dir, load_item_side

        settings = GFMFRConfig.from_mapping(run_config)
        t = time.perf_counter()
        side = load_item_side(cfg.dataset, cfg.rating_threshold, cfg.min_interactions, cfg.cache_dir,
                              cfg.split_ties)
        if len(side.items) != data.num_items:
            raise ValueError(f"item side information has {len(side.items)} rows but the split has "
                             f"{data.num_items} items; delete the stale cache under "
                             f"{cfg.cache_dir or default_cache_dir()}/splits")
        cache = Path(cfg.cache_dir or default_cache_dir()) / "modalities"
        encoders = EncoderConfig(text_model=settings.text_encoder or None,
                                 image_model=settings.image_encoder or None,
                                 kg_dim=settings.kg_dim, seed=cfg.seed, device=cfg.device)
        tables, notes = item_modalities(cfg.dataset, side.items, side.kg, settings.modalities,
                                        encoders, cache)
        for m, note in notes.items():
            log(INFO, "gfmfr: modality '%s' %s", m, note)
        seconds = time.perf_counter() - t
        log(INFO, "gfmfr: modalities %s (%.1fs to encode or load from %s)",
            {m: f.shape[1] for m, (f, _) in tables.items()}, seconds, cache)
        return cls(settings=settings, modalities=tables, model=model, run_dir=run_dir,
                   device=cfg.device, modality_notes=notes, encode_seconds=seconds, **common)

    # ----- hooks ------------------------------------------------------------------------------
    def summary(self) -> None:
        super().summary()
        log(INFO, "\t├──> gfmfr: %d groups (%s), fusion %s over %s, lambda %s (base %g), "
            "scorer mode %s", self.num_groups, self.settings.cluster, self.settings.fusion,
            sorted(self._mods), self.settings.schedule_name(), self.settings.lambda_, self.plan.mode)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        """Schedule this round's λ_t (sent as ``gfmfr-lambda-t`` by :meth:`train_config`), keep
        the item table sent (FedMF's clustering vector), then the base ``configure_train``."""
        rec, dis = self._losses
        self._lambda = float(self.schedule(server_round, rec, dis, self._lambda))
        self._info = {"gfmfr-lambda-t": self._lambda}
        if self.plan.mode == "client" and not self.plan.shared:
            self._sent_items = arrays[self.item_table_key].numpy()
        return super().configure_train(server_round, arrays, config, grid)

    def train_config(self, server_round: int) -> dict[str, Any]:
        """``{"gfmfr-lambda-t": λ_t, "gfmfr-kl-items": "batch" | "all"}``."""
        return {ROUND_LAMBDA: self._lambda, KL_ITEMS: self.settings.kl_items}

    def train_payload(self, server_round: int, node_ids: list[int]) -> dict[int, dict[str, Any]]:
        """``{"gfmfr": record of the node's group}`` for nodes that have a group."""
        payload = {}
        for nid in node_ids:
            group = self._group_of_user.get(self.user_of.get(nid, -1))
            if group is not None and group in self._signals:
                payload[nid] = {GFMFR_PAYLOAD: self._signals[group]}
        self._info["gfmfr-signalled"] = len(payload)
        return payload

    def server_update(self, server_round: int, replies: list[TrainReply],
                      arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cluster, fit the fusion module, rebuild the group signals; ``arrays`` unchanged."""
        t0 = time.perf_counter()
        users, weights, tables, vectors, scorers, counts, rec, dis = self._parse(replies)
        labels = self.tracker.update(server_round, users, vectors)
        for user, label in zip(users, labels):
            self._group_of_user[user] = int(label)
        self._log_groups(server_round)
        t1 = time.perf_counter()

        item_weights = np.stack(counts) if counts else np.asarray(weights)
        targets = torch.as_tensor(group_targets(tables, labels, item_weights, self.num_groups),
                                  device=self.device)
        active = sorted({int(l) for l in labels})
        history = train_fusion(self.fusion, self._mods, self._masks, targets, active,
                               epochs=self.settings.epochs, optimizer=self._opt)
        t2 = time.perf_counter()

        for l in active:
            members = np.flatnonzero(labels == l)
            self._pbar[l] = average_state([scorers[i] for i in members],
                                          [weights[i] for i in members])
        q = fuse(self.fusion, self._mods, self._masks).cpu()   # (g, N, d)
        for l, pbar in self._pbar.items():
            self._signals[l] = self._signal(q[l], pbar)
        t3 = time.perf_counter()
        self._info.update(signal_diagnostics(q, targets.cpu(), active,
                                             self._scorer if self.plan.mode == "server" else None,
                                             {l: self._pbar[l] for l in active}))

        self._losses = (float(np.mean(rec)) if rec else None, float(np.mean(dis)) if dis else None)
        sizes = np.bincount(labels, minlength=self.num_groups).tolist()
        self._seconds.append(t3 - t0)
        self._info.update({
            "gfmfr-seconds": t3 - t0, "gfmfr-cluster-seconds": t1 - t0,
            "gfmfr-fusion-seconds": t2 - t1, "gfmfr-preference-seconds": t3 - t2,
            "gfmfr-fusion-loss": history[-1],
            "gfmfr-group-sizes": sizes, "gfmfr-distilled": len(dis),
        })
        # Means over the clients that distilled (all clients' rec-loss before anyone did);
        # a loss nobody reported is left out, never written as NaN.
        for key, value in zip(("gfmfr-rec-loss", "gfmfr-dis-loss"), self._losses):
            if value is not None:
                self._info[key] = value
        return arrays

    def round_info(self) -> dict[str, Any]:
        return dict(self._info)

    def finish(self) -> dict[str, Any]:
        """Write ``group_dynamics.png``; return the ``"gfmfr"`` block of ``final.json``."""
        if self.run_dir is not None and self.tracker.assignments:
            from server_tasks.plots import plot_group_dynamics

            plot_group_dynamics(self.tracker.assignments, self.run_dir / "group_dynamics.png",
                                n_users=self.settings.plot_users, seed=self.tracker.seed)
        return {"gfmfr": {
            "modalities": {m: int(f.shape[1]) for m, f in self._mods.items()},
            "modality-notes": self.modality_notes,
            "groups": self.num_groups, "cluster": self.settings.cluster,
            "fusion": self.settings.fusion, "lambda-schedule": self.settings.schedule_name(),
            "scorer-mode": self.plan.mode, "uploaded-scorer-keys": list(self.plan.upload),
            "encode-seconds": self.encode_seconds,
            "mean-server-seconds": float(np.mean(self._seconds)) if self._seconds else 0.0,
            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in zip(GFMFRConfig.keys(), asdict(self.settings).values())},
        }}

    # ----- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base state plus GFMFR's server state: fusion module and its Adam state, group
        tracker (centroids, assignments), each user's group, the groups' averaged scorers and
        signals, the server scorer copy, lambda schedule state (last lambda, losses), timings."""
        from fedmm.checkpoint import to_tensors

        t = self.tracker
        return {**super().state_dict(), "gfmfr": {
            "fusion": self.fusion.state_dict(), "optimizer": self._opt.state_dict(),
            "scorer": self._scorer.state_dict(),
            "centroids": None if t.centroids is None else torch.from_numpy(t.centroids.copy()),
            "assignments": {int(r): {int(u): int(g) for u, g in a.items()}
                            for r, a in t.assignments.items()},
            "group-of-user": {int(u): int(g) for u, g in self._group_of_user.items()},
            "pbar": {int(l): dict(v) for l, v in self._pbar.items()},
            "signals": {int(l): to_tensors({k: rec[k].numpy() for k in rec.keys()})
                        for l, rec in self._signals.items()},
            "losses": list(self._losses), "lambda": self._lambda, "seconds": list(self._seconds),
        }}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from fedmm.checkpoint import to_numpy

        super().load_state_dict(state)
        g = state["gfmfr"]
        self.fusion.load_state_dict(g["fusion"])
        self._opt.load_state_dict(g["optimizer"])
        self._scorer.load_state_dict(g["scorer"])
        self.tracker.centroids = None if g["centroids"] is None else g["centroids"].numpy().copy()
        self.tracker.assignments = {int(r): dict(a) for r, a in g["assignments"].items()}
        self._group_of_user = dict(g["group-of-user"])
        self._pbar = {int(l): dict(v) for l, v in g["pbar"].items()}
        self._signals = {int(l): dict_to_arrays(to_numpy(v)) for l, v in g["signals"].items()}
        rec, dis = g["losses"]
        self._losses = (rec, dis)
        self._lambda = g["lambda"]
        self._seconds = list(g["seconds"])

    def rewind_outputs(self, server_round: int) -> None:
        """Drop the rounds after ``server_round`` from ``groups.jsonl``."""
        if self.run_dir is not None:
            from fedmm.checkpoint import truncate_jsonl

            truncate_jsonl(self.run_dir / "groups.jsonl", server_round)

    # ----- helpers ----------------------------------------------------------------------------
    def _parse(self, replies: list[TrainReply]):
        """Per reply: user, weight, item table, clustering vector ``P_u``, scorer state, item
        counts (item-wise aggregation only), rec-loss, dis-loss (where reported)."""
        users, weights, tables, vectors, scorers, counts, rec, dis = [], [], [], [], [], [], [], []
        rec_all: list[float] = []
        key = self.item_table_key
        for r in replies:
            if r.user is None:
                raise ReplyError(f"reply from node {r.node}: GFMFR tracks groups by user, but this "
                                 f"node did not report its user in the query round (give the "
                                 f"ClientApp a query handler answering metric 'user')")
            users.append(r.user)
            weights.append(r.num_examples)
            tables.append(r.arrays[key])
            if self.aggregation == "itemwise":
                counts.append(r.extra(ITEM_COUNTS, "aggregation 'itemwise'"))
            scorer = {k: r.extra(SCORER_PREFIX + k, f"GFMFR ({self.plan.mode} mode; the trained "
                                                    f"prediction function P_u)")
                      for k in self.plan.upload}
            for k in self.plan.shared:
                scorer[k] = r.arrays[k]
            for k, ref in self._scorer.state_dict().items():
                if k in scorer and tuple(scorer[k].shape) != tuple(ref.shape):
                    raise ReplyError(f"reply from node {r.node}: '{SCORER_PREFIX}{k}' has shape "
                                     f"{scorer[k].shape}, expected {tuple(ref.shape)}")
            if scorer:
                vec = np.concatenate([np.asarray(scorer[k], np.float64).ravel() for k in sorted(scorer)])
            else:  # FedMF: no shared scorer part; the item-table update is uploaded anyway
                vec = (np.asarray(r.arrays[key], np.float64)
                       - np.asarray(self._sent_items, np.float64)).ravel()
            vectors.append(vec)
            # Copies: the reply's arrays are read-only views (TrainReply), torch wants to own.
            scorers.append({k: torch.from_numpy(np.array(v)) for k, v in scorer.items()})
            rec_all.append(r.scalar(REC_LOSS, "GFMFR's lambda schedule (mean batch BCE)"))
            if DIS_LOSS in r.metrics:
                dis.append(r.metrics[DIS_LOSS])
                rec.append(r.metrics[REC_LOSS])
        if not dis:  # nobody distilled yet: rec-loss of everyone, dis unknown
            rec = rec_all
        return users, weights, tables, np.stack(vectors), scorers, counts, rec, dis

    def _signal(self, q_l: torch.Tensor, pbar: dict[str, torch.Tensor]) -> ArrayRecord:
        """The ``"gfmfr"`` record of one group (server mode: ``E_M_l``; client mode: ``Q_l``
        and the averaged shared scorer parts)."""
        if self.plan.mode == "server":
            self._scorer.load_state_dict(pbar, strict=False)
            pref = group_preference(q_l, self._scorer.score_vectors)
            return dict_to_arrays({PREFERENCE: pref})
        out = {FEATURES: q_l.numpy().astype(np.float16)}
        out.update({SCORER_PREFIX + k: v.numpy().astype(np.float32) for k, v in pbar.items()})
        return dict_to_arrays(out)

    def _log_groups(self, server_round: int) -> None:
        if self.run_dir is None:
            return
        line = {"round": int(server_round),
                "groups": {str(u): int(g) for u, g in
                           sorted(self.tracker.assignments[int(server_round)].items())}}
        with open(self.run_dir / "groups.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
