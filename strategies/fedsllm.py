"""FedSLLM strategy: LLM-derived semantic prototypes for client sample selection.

Paper: "LLM-Derived Semantic Prototypes for Sample Selection in Federated Recommendation"
(FedSLLM). A thin :class:`~strategies.base.FedRecStrategy` subclass; the round loop is
Flower's. Server-side work, all without client data:

* pre-training (:meth:`FedSLLM.initial_arrays`, once): item texts ``a_i`` (title, year,
  genres, description) -> ``x_i = F_PLM(a_i)`` (packaged all-MiniLM-L6-v2 by default, cached
  on disk per dataset + encoder) -> autoencoder pre-training -> the global item table is
  initialised with ``z_i = E_AE(x_i)``; the LLM writes the first textual prototypes from an
  item/genre summary, embedded as ``e_j = E_AE(F_PLM(p_j))``;
* every round (:meth:`FedSLLM.train_payload`): cosine ``sim(i, j)`` of the current global item
  table with the prototype embeddings, sent with the embeddings to the sampled clients;
* after aggregation (:meth:`FedSLLM.server_update`): client counts are summed; every
  ``fedsllm-align-every`` rounds ``E_AE`` is aligned to the frozen aggregated item table (MSE)
  and the prototypes re-embedded; every ``fedsllm-proto-update-every`` rounds the LLM revises
  the prototypes from the current ones and the counts summed since the last revision. Neither
  runs after the last round (nothing would use it).

Baselines at the same fraction ``S`` (``fedsllm-sampler``): ``random``, ``random-pass`` (the
selection pass of ``fedsllm-pool = "unseen"`` in a random order), ``entropy``,
``margin``, ``least-confidence`` (client-side, on the model's probabilities, no payload),
``fedselect`` and ``fale`` (client-side, see :mod:`clients.selection`), ``cluster`` (K-Means
centroids of the current item table as prototype vectors, refreshed on the same schedule, no
LLM) and ``base`` (every sample). The paper gives the autoencoder initialisation to all methods
(App. B.2, section 5.1), so by default (``fedsllm-ae-init-baselines = true``) every sampler,
``base`` and ``cluster`` included, starts from ``z_i = E_AE(x_i)`` and a comparison is about the
selection alone; ``false`` starts the baselines from the backbone's random table (ablation).

Message contract (what another Flower project's ClientApp must do), on top of the base
contract of :mod:`strategies.base`:

* train message, ``"config"`` ConfigRecord adds ``"fedsllm-sampler"`` (str, one of the
  samplers above), ``"fedsllm-fraction"`` (float ``S`` in ``(0, 1]``: share of the node's
  training positives to train on, ``max(1, floor(S * n))``), ``"fedsllm-eps"`` (float) and
  ``"fedsllm-score"`` (str, ``"probability"`` or ``"literal"``: score form of ``fedsllm`` and
  ``cluster``, see :func:`clients.selection.fedsllm_scores`) and ``"fedsllm-pool"`` (str,
  ``"unseen"`` or ``"all"``: which positives the top-``S`` rule of ``fedsllm`` and ``cluster``
  ranks, see :func:`clients.selection.select_top_unseen`; absent = ``"all"``);
* train message, for ``fedsllm`` and ``cluster`` only: ArrayRecord ``"fedsllm"`` with
  ``"prototypes"`` float32 ``(P, d)`` (prototype embeddings ``e_j`` in item-embedding space)
  and ``"similarity"`` float32 ``(N, P)`` (``sim(i, j)`` for every item of the catalogue;
  the server does not know which items a client has);
* train reply: ``"metrics"`` adds ``"selection-ms"`` (float, wall time to score and select)
  and ``"selection-candidates"`` (int ``n``; ``num-examples / (1 + num-negatives)`` is the selected count),
  and, optional, the diagnostics ``"selection-coverage"`` (float, share of the node's
  positives selected in any of its rounds so far) and ``"selection-repeat"`` (float, share of
  this round's selection already selected in an earlier round; absent in a node's first round);
  for ``fedsllm`` and ``cluster`` an ArrayRecord ``"extras"`` with ``"prototype-counts"``
  int64 ``(P,)``: ``c_u[j] = #{i : argmin_j s(i, j) = j}`` over all ``n`` training positives
  (sums to ``n``). Only these counts leave a client besides the shared parameters.
* evaluate messages and replies are unchanged.

Run outputs (in the run directory): ``prototypes.jsonl`` (one line per round with the
prototype names in force and the summed counts, plus one line per initial/revised set) and
``prototype-prompts.jsonl`` (every backend call: prompt, raw response, parsed and accepted
names, fallback reason, seconds).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import INFO
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from flwr.common.logger import log

from clients.selection import POOLS, PROTOTYPE_METHODS, SAMPLERS, SCORE_FORMS
from fedmm.config import ConfigSection, RunConfig
from fedmm.protocol import (EPS_CFG, FEDSLLM_PAYLOAD, FRACTION_CFG, POOL_CFG, PROTOTYPE_COUNTS,
                            PROTOTYPES, ReplyError, SAMPLER_CFG, SCORE_CFG, SIMILARITY, TrainReply,
                            dict_to_arrays)
from server_tasks.item_text import FEDSLLM_TEXT, item_texts
from server_tasks.modality_cache import cached_text_embeddings
from server_tasks.prototypes.backends import LLMSpec, make_generator, parse_llm_spec
from server_tasks.prototypes.prompts import item_noun_for
from server_tasks.selection_stats import selection_overlap, sum_prototype_counts
from strategies.base import FedRecStrategy

#: Prefix of this section's run-config keys.
_PREFIX = "fedsllm-"


# ----- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class FedSLLMConfig(ConfigSection):
    """The ``fedsllm-*`` run-config keys, typed. Field ``foo_bar`` is the key ``fedsllm-foo-bar``.

    One-line docs live in ``pyproject.toml`` under ``# -- fedsllm``; the field defaults equal
    pyproject's (a test checks it), so ``FedSLLMConfig(sampler="random")`` works alone.
    """

    #: All run-config keys of this section (filled in right after the class).
    KEYS: ClassVar[tuple[str, ...]] = ()
    PREFIX: ClassVar[str] = _PREFIX

    sampler: str = "fedsllm"
    fraction: float = 0.1
    eps: float = 1e-6
    score: str = "probability"
    pool: str = "unseen"
    llm: str = "smollm2"
    api_key_env: str = "OPENAI_API_KEY"
    llm_max_tokens: int = 160
    llm_temperature: float = 0.0
    llm_threads: int = 0
    llm_lag: int = 0
    llm_stop_full: bool = True
    max_prototypes: int = 10
    proto_update_every: int = 10
    align_every: int = 10
    text_encoder: str = ""
    ae_epochs: int = 100
    align_epochs: int = 20
    ae_lr: float = 0.001
    ae_init_baselines: bool = True
    item_noun: str = ""

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the key when a value is out of range."""
        bad = self.bad
        if self.sampler not in SAMPLERS:
            raise bad("sampler", f"choose one of {sorted(SAMPLERS)}")
        if not 0.0 < self.fraction <= 1.0:
            raise bad("fraction", "must be in (0, 1] (share of training positives kept)")
        if self.eps <= 0:
            raise bad("eps", "must be > 0")
        if self.score not in SCORE_FORMS:
            raise bad("score", f"choose one of {list(SCORE_FORMS)} (\"probability\": the paper's "
                               "intent, \"literal\": Eq. 9-11 on logits and raw cosine)")
        if self.pool not in POOLS:
            raise bad("pool", f"choose one of {list(POOLS)} (\"unseen\": top-S among the positives "
                              "not used in the client's current pass, \"all\": among all)")
        if self.max_prototypes < 2:
            raise bad("max_prototypes", "must be >= 2")
        for name in ("proto_update_every", "llm_max_tokens", "ae_epochs", "align_epochs"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.llm_max_tokens > 2048:
            raise bad("llm_max_tokens", "must be <= 2048")
        if self.align_every < 0:
            raise bad("align_every", "must be >= 0 (0 = never align)")
        if self.ae_lr <= 0:
            raise bad("ae_lr", "must be > 0")
        if self.llm_temperature < 0:
            raise bad("llm_temperature", "must be >= 0 (0 = greedy)")
        if self.llm_threads < 0:
            raise bad("llm_threads", "must be >= 0 (0 = every CPU of the server process)")
        spec = self.llm_spec()
        if self.llm_lag < 0:
            raise bad("llm_lag", "must be >= 0 (0 = revise in the round the counts come in)")
        if self.llm_lag:
            if self.sampler != "fedsllm":
                raise bad("llm_lag", f"needs sampler 'fedsllm' (an LLM writes the prototypes), "
                                     f"not '{self.sampler}'; set it to 0")
            if spec.kind not in ("llamacpp", "openai"):
                raise bad("llm_lag", "needs fedsllm-llm = \"llamacpp\" (or an \"openai:\" "
                                     "server): the transformers backend sets torch's process-wide "
                                     "thread count, which a call running beside the clients "
                                     "would change under them; set it to 0")
            if self.llm_lag >= self.proto_update_every:
                raise bad("llm_lag", f"must be below fedsllm-proto-update-every "
                                     f"({self.proto_update_every}): one revision at a time")

    def llm_spec(self) -> LLMSpec:
        """The parsed ``fedsllm-llm`` value (see :func:`parse_llm_spec`)."""
        return parse_llm_spec(self.llm)

    @property
    def uses_prototypes(self) -> bool:
        """Whether the sampler needs the prototype payload (``fedsllm`` or ``cluster``)."""
        return self.sampler in PROTOTYPE_METHODS

    @property
    def uses_autoencoder(self) -> bool:
        """Whether the server pre-trains the autoencoder and initialises the item table."""
        return self.sampler == "fedsllm" or self.ae_init_baselines


FedSLLMConfig.KEYS = tuple(FedSLLMConfig.keys())


def _rms(table: np.ndarray) -> float:
    value = float(np.sqrt(np.mean(np.square(table, dtype=np.float64))))
    return value if math.isfinite(value) and value > 0 else 1.0


# ----- strategy -----------------------------------------------------------------------------
class FedSLLM(FedRecStrategy):
    """FedSLLM (and its sampling baselines) on top of :class:`FedRecStrategy`.

    Parameters
    ----------
    settings : FedSLLMConfig
        The ``fedsllm-*`` keys.
    items : pandas.DataFrame
        Server-side item table, one row per internal item index (``title``, ``year``,
        ``genres``, ``description``).
    dataset_key : str, default ""
        Dataset name (text-embedding cache key; prompt noun).
    cache_dir : str, pathlib.Path or None, default None
        Root of the text-embedding cache; ``None`` disables it.
    device : str, default "cpu"
        Device of the text encoder and the local LLM.
    run_dir : pathlib.Path or None, default None
        Where ``prototypes.jsonl`` and ``prototype-prompts.jsonl`` go (``None``: not written).
    generator : PrototypeGenerator or None, default None
        Prototype backend; ``None`` -> :func:`make_generator` (tests inject scripted ones).
    encode_fn : callable or None, default None
        ``list[str] -> float (n, D)`` text encoder ``F_PLM``; ``None`` -> the ``fedsllm-text-encoder``
        model through :func:`server_tasks.text_encoder.encode_texts`.
    seed : int, default 0
        Seeds client sampling, autoencoder training, K-Means and LLM sampling.
    **common
        The keyword arguments of :class:`FedRecStrategy`.
    """

    def __init__(self, *, settings: FedSLLMConfig, items: pd.DataFrame, dataset_key: str = "",
                 cache_dir: str | Path | None = None, device: str = "cpu",
                 run_dir: Path | None = None, generator=None,
                 encode_fn: Callable[[list[str]], np.ndarray] | None = None, seed: int = 0,
                 **common: Any) -> None:
        super().__init__(seed=seed, **common)
        from server_tasks.prototypes import PrototypeManager

        self.settings = settings
        self.items = items.reset_index(drop=True)
        self.dataset_key = dataset_key
        self.cache_dir = cache_dir
        self.device = device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = int(seed)
        self._encode_fn = encode_fn
        self._encoder_tag = _encoder_tag(settings.text_encoder)
        self.manager = None
        if settings.uses_prototypes:
            self.manager = PrototypeManager(
                generator if generator is not None else make_generator(settings, seed, device),
                self.items,
                embed_fn=self._embed_names if settings.sampler == "fedsllm" else None,
                max_prototypes=settings.max_prototypes,
                item_noun=item_noun_for(dataset_key, settings.item_noun),
                log_path=None if self.run_dir is None else self.run_dir / "prototype-prompts.jsonl",
                stop_full=settings.llm_stop_full)
        self.autoencoder = None
        self._x = None  # torch float32 (N, D): item text embeddings
        self._pending = np.zeros(0, dtype=np.int64)  # counts summed since the last revision
        # fedsllm-llm-lag > 0: the request in flight ({"round", "request", "future"}) and the
        # one thread its backend call runs on.
        self._inflight: dict[str, Any] | None = None
        self._llm_thread = None
        self._info: dict[str, Any] = {}
        self._summary: dict[str, Any] = {"sampler": settings.sampler, "pretrain-seconds": 0.0,
                                         "prototype-updates": 0, "alignments": 0,
                                         "prototype-seconds": 0.0}

    @property
    def names(self) -> list[str]:
        """Names of the prototypes in force (owned by :attr:`manager`; ``[]`` without one)."""
        return self.manager.names if self.manager is not None else []

    @property
    def vectors(self) -> np.ndarray | None:
        """float32 ``(P, d)`` prototypes in force (owned by :attr:`manager`)."""
        return self.manager.vectors if self.manager is not None else None

    @classmethod
    def build(cls, common: dict[str, Any], cfg: RunConfig, run_config: Mapping[str, Any],
              data: Any, run_dir: Path | None, model: Any) -> "FedSLLM":
        """Read the ``fedsllm-*`` keys once and build the strategy (see ``strategies.factory``)."""
        from fedmm.data.split import default_cache_dir, load_item_side
        from fedmm.device import resolve_device

        settings = FedSLLMConfig.from_mapping(run_config)
        side = load_item_side(cfg.dataset, cfg.rating_threshold, cfg.min_interactions,
                              cfg.cache_dir, cfg.split_ties)
        if len(side.items) != data.num_items:
            raise ValueError(f"item table of {cfg.dataset} has {len(side.items)} rows but the "
                             f"split has {data.num_items} items; delete the split cache")
        root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        return cls(settings=settings, items=side.items, dataset_key=cfg.dataset,
                   cache_dir=root / "modalities", device=str(resolve_device(cfg.device)),
                   run_dir=run_dir, **common)

    # ----- text side ------------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> np.ndarray:
        """``F_PLM``: list of ``n`` str -> float32 ``(n, D)``."""
        if self._encode_fn is not None:
            return np.asarray(self._encode_fn(list(texts)), dtype=np.float32)
        from server_tasks.text_encoder import encode_texts

        return encode_texts(list(texts), model=self.settings.text_encoder or None,
                            device=self.device)

    def _embed_names(self, names: list[str]) -> np.ndarray:
        """``e_j = E_AE(F_PLM(p_j))``: ``P`` names -> float32 ``(P, d)``."""
        from server_tasks.prototypes import TextPrototypeEmbedder

        if self.autoencoder is None:
            raise RuntimeError("prototype names cannot be embedded before the autoencoder is "
                               "pre-trained (initial_arrays)")
        return TextPrototypeEmbedder(self.autoencoder, encode_fn=self._encode)(names)

    # ----- hooks ----------------------------------------------------------------------------
    def initial_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server pre-training: autoencoder + item-table initialisation, first prototypes."""
        import torch

        from server_tasks.autoencoder import (default_widths, init_item_embeddings,
                                              pretrain_autoencoder)

        start = time.perf_counter()
        table = arrays[self.item_table_key]
        if table.shape[0] != len(self.items):
            raise ValueError(f"'{self.item_table_key}' has {table.shape[0]} rows but the item table "
                             f"has {len(self.items)} items")
        if self.settings.uses_autoencoder:
            x, hit = self._text_embeddings()
            text_s = time.perf_counter() - start
            s = self.settings
            self.autoencoder, history = pretrain_autoencoder(
                self._x, default_widths(x.shape[1], table.shape[1]), epochs=s.ae_epochs,
                lr=s.ae_lr, seed=self.seed)
            z = init_item_embeddings(self.autoencoder, self._x, scale=_rms(table))
            arrays = {**arrays, self.item_table_key: z.cpu().numpy().astype(table.dtype)}
            self._summary.update({"ae-widths": self.autoencoder.widths,
                                  "ae-mse": history[-1], "text-cache-hit": hit,
                                  "text-seconds": text_s,
                                  "ae-seconds": time.perf_counter() - start - text_s})
            log(INFO, "fedsllm: autoencoder %s pre-trained on %d item texts (%s), MSE %.5f",
                self.autoencoder.widths, x.shape[0], "cached" if hit else "encoded", history[-1])
        if self.settings.uses_prototypes:
            self._revise(0, arrays[self.item_table_key], counts=None)
        self._summary["pretrain-seconds"] = time.perf_counter() - start
        return arrays

    def _text_embeddings(self) -> tuple[np.ndarray, bool]:
        """``x_i = F_PLM(a_i)`` of every item (from the disk cache when there), kept as
        :attr:`_x`; returns ``(x, cache hit)``."""
        import torch

        texts = item_texts(self.items, FEDSLLM_TEXT)
        x, hit = cached_text_embeddings(texts, self.dataset_key, self._encoder_tag,
                                        self._encode, self.cache_dir)
        self._x = torch.as_tensor(x, dtype=torch.float32)
        return x, hit

    # ----- checkpoint -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base state plus FedSLLM's: autoencoder (widths, weights), prototypes in force
        (manager and backend state), counts summed since the last revision, the summary."""
        import torch

        ae = self.autoencoder
        manager = None if self.manager is None else self.manager.state_dict()
        if self._inflight is not None:
            # The backend as it was before the call in flight (the call may be changing it now):
            # a resumed run asks again from there (_inflight_from).
            manager["generator"] = self._inflight["generator"]
        return {**super().state_dict(), "fedsllm": {
            "inflight": self._inflight_state(),
            "autoencoder": None if ae is None else {"widths": list(ae.widths),
                                                    "weights": ae.state_dict()},
            "manager": manager,
            "pending": torch.from_numpy(np.asarray(self._pending, dtype=np.int64).copy()),
            "summary": json.dumps(self._summary),
        }}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (instead of :meth:`initial_arrays`: the item text
        embeddings are read again from their cache, the autoencoder is not re-trained)."""
        from server_tasks.autoencoder import ItemAutoencoder

        super().load_state_dict(state)
        f = state["fedsllm"]
        if f["autoencoder"] is not None:
            self._text_embeddings()
            self.autoencoder = ItemAutoencoder(f["autoencoder"]["widths"])
            self.autoencoder.load_state_dict(f["autoencoder"]["weights"])
            self.autoencoder.eval()
        if self.manager is not None:
            self.manager.load_state_dict(f["manager"])
        self._pending = f["pending"].numpy().copy()
        self._summary = json.loads(f["summary"])
        self._inflight = self._inflight_from(f.get("inflight"))

    def rewind_outputs(self, server_round: int) -> None:
        """Drop the rounds after ``server_round`` from ``prototypes.jsonl`` and
        ``prototype-prompts.jsonl``."""
        if self.run_dir is not None:
            from fedmm.checkpoint import truncate_jsonl

            for name in ("prototypes.jsonl", "prototype-prompts.jsonl"):
                truncate_jsonl(self.run_dir / name, server_round)

    def train_config(self, server_round: int) -> dict[str, Any]:
        """The sampler settings of every train message (see the module's message contract)."""
        s = self.settings
        return {SAMPLER_CFG: s.sampler, FRACTION_CFG: float(s.fraction), EPS_CFG: float(s.eps),
                SCORE_CFG: s.score, POOL_CFG: s.pool}

    def train_payload(self, server_round: int, node_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Prototype embeddings and item-prototype similarities (prototype samplers only)."""
        if not self.settings.uses_prototypes:
            return {}
        if self.vectors is None:
            raise RuntimeError("FedSLLM has no prototypes: initial_arrays() must run before "
                               "the first round (the ServerApp calls it)")
        from server_tasks.prototypes import cosine_similarity_matrix

        assert self._global is not None
        sim = cosine_similarity_matrix(self._global[self.item_table_key], self.vectors)
        record = dict_to_arrays({PROTOTYPES: self.vectors.astype(np.float32),
                                 SIMILARITY: sim.astype(np.float32)})
        return {nid: {FEDSLLM_PAYLOAD: record} for nid in node_ids}

    def server_update(self, server_round: int, replies: list[TrainReply],
                      arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sum counts; align ``E_AE`` and revise the prototypes when due."""
        metrics = [r.metrics for r in replies]
        ms = [float(mm["selection-ms"]) for mm in metrics if "selection-ms" in mm]
        self._info = {"selection-ms": float(np.mean(ms)) if ms else float("nan"),
                      **selection_overlap(metrics)}
        if not self.settings.uses_prototypes:
            return arrays
        if self.secagg is not None:  # summed by SecAgg+ (secagg_sum_extras)
            summed = np.asarray(self.secagg_sums[PROTOTYPE_COUNTS], dtype=np.int64)
            if summed.shape != (len(self.names),):
                raise ReplyError(f"securely summed {PROTOTYPE_COUNTS} have shape {summed.shape}, "
                                 f"expected ({len(self.names)},)")
        else:
            sources = [r.node for r in replies]
            counts = [r.extra(PROTOTYPE_COUNTS, f"sampler '{self.settings.sampler}' ((P,) int64)")
                      for r in replies]
            summed = sum_prototype_counts(counts, len(self.names), sources, key=PROTOTYPE_COUNTS)
        self._pending = self._pending + summed
        self._info.update({"num-prototypes": len(self.names),
                           "prototype-counts": summed.tolist()})
        self._write({"round": server_round, "event": "round", "names": self.names,
                     "counts": summed.tolist(), "clients": len(replies)})
        if server_round >= self.num_rounds:
            return arrays  # nothing would use a new encoder or new prototypes
        table = arrays[self.item_table_key]
        s = self.settings
        aligned = False
        if s.sampler == "fedsllm" and s.align_every and server_round % s.align_every == 0:
            self._align(server_round, table)
            aligned = True
        installed = False
        if self._inflight is not None and server_round >= self._inflight["round"] + s.llm_lag:
            self._install_lagged(server_round)
            installed = True
        if server_round % s.proto_update_every == 0:
            if not s.llm_lag:
                self._revise(server_round, table, counts=self._pending)
                installed = True
            elif server_round + s.llm_lag < self.num_rounds:  # else nothing would use them
                self._submit(server_round)
        if aligned and not installed:
            self.manager.reembed()
        return arrays

    def secagg_sum_extras(self) -> tuple[str, ...]:
        """The prototype counts are only summed: under SecAgg+ they go through it."""
        return (PROTOTYPE_COUNTS,) if self.settings.uses_prototypes else ()

    def round_info(self) -> dict[str, Any]:
        return dict(self._info)

    def finish(self) -> dict[str, Any]:
        if self._llm_thread is not None:
            self._llm_thread.shutdown(wait=True)
            self._llm_thread = None
        return {"fedsllm": {**self._summary, "prototypes": list(self.names)}}

    def summary(self) -> None:
        super().summary()
        s = self.settings
        log(INFO, "\t├──> fedsllm: sampler %s, S %.3f, P <= %d, prototypes every %d, align "
            "every %d", s.sampler, s.fraction, s.max_prototypes, s.proto_update_every,
            s.align_every)

    # ----- server-side steps ----------------------------------------------------------------
    def _align(self, server_round: int, table: np.ndarray) -> None:
        """Train ``E_AE`` towards the frozen aggregated item table (MSE)."""
        import torch

        from server_tasks.autoencoder import align_encoder

        start = time.perf_counter()
        history = align_encoder(self.autoencoder, self._x,
                                torch.as_tensor(table, dtype=torch.float32),
                                epochs=self.settings.align_epochs, lr=self.settings.ae_lr,
                                seed=self.seed + server_round)
        self._summary["alignments"] += 1
        self._info.update({"align-mse": history[-1],
                           "align-seconds": time.perf_counter() - start})

    def _revise(self, server_round: int, table: np.ndarray, counts: np.ndarray | None) -> None:
        """Ask the backend for the initial (``counts=None``) or revised prototype set."""
        start = time.perf_counter()
        previous = self.names
        result = self.manager.update(
            server_round, counts=counts,
            item_embeddings=table if self.settings.sampler == "cluster" else None)
        self._installed(server_round, result, previous, counts, time.perf_counter() - start)

    def _installed(self, server_round: int, result, previous: list[str],
                   counts: np.ndarray | None, seconds: float,
                   lagged: dict[str, Any] | None = None) -> None:
        """Book-keeping after a prototype set was put in force: counts restart, summary, round
        info, ``prototypes.jsonl``, the log line. ``lagged``: ``requested-round`` and
        ``wait-seconds`` of a lagged revision (``seconds`` is then the backend call's)."""
        lagged = lagged or {}
        if result.vectors is None:  # pragma: no cover - both backends give vectors here
            raise RuntimeError("prototype backend produced no vectors")
        self._pending = np.zeros(len(self.names), dtype=np.int64)
        if server_round > 0:
            self._summary["prototype-updates"] += 1
            self._info.update({"prototype-update": result.source,
                               "prototype-seconds": seconds})
        self._summary["prototype-seconds"] += seconds
        if lagged:
            self._summary["prototype-wait-seconds"] = (
                self._summary.get("prototype-wait-seconds", 0.0) + lagged["wait-seconds"])
            self._info.update({"prototype-wait-seconds": lagged["wait-seconds"],
                               "prototype-requested-round": lagged["requested-round"]})
        self._write({"round": server_round, "event": "update" if server_round else "initial",
                     "names": self.names, "source": result.source, "previous": previous,
                     "counts": None if counts is None else [int(c) for c in counts],
                     "seconds": round(seconds, 3),
                     **{k: (round(v, 3) if isinstance(v, float) else v)
                        for k, v in lagged.items()}})
        log(INFO, "fedsllm: round %d prototypes (%s, %.1fs%s): %s", server_round, result.source,
            seconds, f", asked at round {lagged['requested-round']}" if lagged else "",
            ", ".join(self.names))

    # ----- lagged revision (fedsllm-llm-lag = L > 0) ------------------------------------------
    def _submit(self, server_round: int) -> None:
        """Start the revision of round ``server_round`` on the LLM thread: the request is made
        now (prototypes in force, counts summed since the last revision); the answer is put in
        force at round ``server_round + L`` (:meth:`_install_lagged`). Counts that come in
        meanwhile are for the prototypes then in force and are dropped at that install."""
        if self._inflight is not None:  # pragma: no cover - check(): L < proto-update-every
            raise RuntimeError("a lagged prototype revision is already in flight")
        self._inflight = self._ask_in_background(server_round, self._pending)

    def _ask_in_background(self, server_round: int, counts: np.ndarray) -> dict[str, Any]:
        """The revision request for the prototypes in force with ``counts``, handed to the LLM
        thread: ``{"round", "request", "generator"`` (the backend's state before the call)
        ``, "future"}``."""
        from concurrent.futures import ThreadPoolExecutor

        if self._llm_thread is None:
            self._llm_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsllm-llm")
        request = self.manager.request(counts=counts)
        return {"round": server_round, "request": request,
                "generator": self.manager.generator.state_dict(),
                "future": self._llm_thread.submit(self.manager.ask, request)}

    def _install_lagged(self, server_round: int) -> None:
        """Wait for the request in flight (if it is not answered yet) and put its prototypes in
        force, embedded with the encoder as it is now."""
        inflight, self._inflight = self._inflight, None
        assert inflight is not None
        start = time.perf_counter()
        proposal, seconds = inflight["future"].result()
        waited = time.perf_counter() - start
        request = inflight["request"]
        result = self.manager.install(server_round, request, proposal, seconds)
        self._installed(server_round, result, list(request.previous), request.counts, seconds,
                        {"requested-round": int(inflight["round"]), "wait-seconds": waited})

    def _inflight_state(self) -> dict[str, Any] | None:
        """The request in flight for a checkpoint, without waiting for its answer: its round and
        the counts it carries (it was made from the prototypes in force, which the checkpoint
        holds; the backend's state before the call is stored as the manager's, see
        :meth:`state_dict`)."""
        if self._inflight is None:
            return None
        import torch

        counts = self._inflight["request"].counts
        return {"round": int(self._inflight["round"]),
                "counts": torch.from_numpy(np.asarray(counts, dtype=np.int64).copy())}

    def _inflight_from(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """Inverse of :meth:`_inflight_state`: the same request asked again (the backend was
        restored to its state before the original call), to be put in force at its round, as in
        the uninterrupted run (a local LLM gives the same answer to the same request from the
        same state: greedy or seeded by its call counter, empty KV cache at every call)."""
        if state is None:
            return None
        return self._ask_in_background(int(state["round"]), state["counts"].numpy().copy())

    def _write(self, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "prototypes.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"sampler": self.settings.sampler, **record},
                                ensure_ascii=False) + "\n")


def _encoder_tag(text_encoder: str) -> str:
    """Cache tag of the ``fedsllm-text-encoder`` value (shared with GFMFR's text cache tags)."""
    from server_tasks.modality_cache import EncoderConfig

    return EncoderConfig(text_model=text_encoder or None).encoder_tag("text")
