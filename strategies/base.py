"""The base federated-recommendation strategy (Flower Message API, ``flwr.serverapp.strategy``).

``FedRecStrategy`` is a thin subclass of Flower's ``FedAvg``: the round loop is Flower's
``Strategy.start``. It changes four hooks:

* ``start`` — before round 1, asks every node which user it holds (one ``query`` message
  each, :meth:`discover_users`), so that sampling is over users: the same seed trains the same
  users in every round of every run, whatever node ids the simulation engine or the
  SuperNodes drew (nodes that do not answer are ordered by node id, which is not
  reproducible across runs; a warning says how many);
* ``configure_train`` — samples ``fraction-train`` of the nodes with its own seeded RNG and
  builds one message per node, so subclasses can add per-node payloads
  (:meth:`train_payload`);
* ``aggregate_train`` — checks replies, aggregates the shared arrays (FedAvg weighted by
  ``num-examples``, or item-wise), then runs :meth:`server_update` (server-side work between
  rounds: GFMFR clustering/fusion, FedSLLM prototypes/alignment), timing it;
* ``configure_evaluate`` — every ``eval-every`` rounds and at the last round, ALL nodes;
* ``aggregate_evaluate`` — per-user metrics averaged over users; keeps the best round by the
  validation metric ``select-metric``.

Message contract (what another Flower project's ClientApp must do):

* query message (once, before round 1): ``"config"`` with ``query = "user"``; query reply:
  ``"metrics"`` with ``user`` (int, the node's user / partition id). Optional: without it
  the strategy still runs, sampling by node id;
* train message: ``"arrays"`` (ArrayRecord of the shared parameters by name), ``"config"``
  (ConfigRecord with ``server-round`` and ``aggregation``), plus subclass payload records;
* train reply: ``"arrays"`` (same keys and shapes), ``"metrics"`` (MetricRecord with
  ``num-examples`` and ``train-loss``), and for ``aggregation="itemwise"`` an ArrayRecord
  ``"extras"`` holding ``item-counts`` ``(num_items,)``;
* evaluate message: ``"arrays"``, ``"config"``; evaluate reply: ``"metrics"`` with the
  per-user metrics named ``{valid|test}_{full|sampled}_{hr|ndcg}@K``.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.aggregation import (ReplyError, better, check_reply_arrays, itemwise_average,
                                    mean_metrics, weighted_average)

ITEM_TABLE_KEY = "item_emb.weight"
ARRAYS, CONFIG, METRICS, EXTRAS = "arrays", "config", "metrics", "extras"


def record_bytes(content: RecordDict) -> int:
    """Bytes of all records of a message content, as Flower counts them."""
    return int(sum(rec.count_bytes() for rec in content.values()))


def arrays_to_dict(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def dict_to_arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


class FedRecStrategy(FedAvg):
    """Federated recommendation strategy with per-node payloads and server-side hooks.

    Parameters
    ----------
    num_rounds : int
        Rounds the run will last (to evaluate at the last one).
    fraction_train : float, default 0.1
        Fraction of nodes sampled per training round (at least one).
    eval_every : int, default 10
        Evaluate all nodes every this many rounds (and at the last round).
    select_metric : str, default "valid_sampled_ndcg@10"
        Validation metric that picks the best round.
    aggregation : {"fedavg", "mean", "itemwise"}, default "fedavg"
        ``fedavg``: shared arrays averaged weighted by ``num-examples``; ``mean``: unweighted
        (each client once); ``itemwise``: as ``fedavg``, but each item row averaged over the
        clients that trained it.
    seed : int, default 0
        Seeds client sampling.
    on_round : callable, optional
        Called with each round's record (a JSON-serialisable dict) as soon as it is complete.
    min_available_nodes : int, default 1
        Wait for this many nodes before sampling.
    """

    def __init__(self, *, num_rounds: int, fraction_train: float = 0.1, eval_every: int = 10,
                 select_metric: str = "valid_sampled_ndcg@10", aggregation: str = "fedavg",
                 seed: int = 0, on_round: Callable[[dict[str, Any]], None] | None = None,
                 min_available_nodes: int = 1) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=1.0, min_train_nodes=1,
                         min_evaluate_nodes=1, min_available_nodes=min_available_nodes)
        if aggregation not in ("fedavg", "mean", "itemwise"):
            raise ValueError(f"aggregation must be 'fedavg', 'mean' or 'itemwise', got {aggregation!r}")
        self.num_rounds = num_rounds
        self.eval_every = eval_every
        self.select_metric = select_metric
        self.aggregation = aggregation
        self.on_round = on_round
        self._rng = random.Random(seed)
        self._user_of: dict[int, int] = {}       # node id -> user, from discover_users
        self._global: dict[str, np.ndarray] | None = None
        self._down: dict[int, int] = {}          # node id -> bytes of its train message
        self._round: dict[str, Any] = {}
        self._t0 = 0.0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    # ----- hooks for subclasses ---------------------------------------------------------------
    def train_payload(self, server_round: int, node_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Extra records per node for the train messages (base: none)."""
        return {}

    def server_update(self, server_round: int, replies: list[Message],
                      arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side work after aggregation; returns the (possibly changed) global arrays."""
        return arrays

    def round_info(self) -> dict[str, Any]:
        """Extra fields for this round's record (base: none)."""
        return {}

    def initial_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side pre-training before round 1 may replace the initial shared arrays
        (e.g. FedSLLM initialises the item table from item text); base: unchanged."""
        return arrays

    def finish(self) -> dict[str, Any]:
        """Called once after the last round (write plots, close logs); returns extra fields
        for ``final.json`` (base: none)."""
        return {}

    # ----- sampling ---------------------------------------------------------------------------
    def _nodes(self, grid: Grid) -> list[int]:
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            log(INFO, "Waiting for nodes: %d of %d connected", len(nodes), self.min_available_nodes)
            time.sleep(1)
        return nodes

    def _key(self, node: int) -> tuple[int, int]:
        """Sort key of a node: by user; nodes of unknown user last, by node id."""
        return (0, self._user_of[node]) if node in self._user_of else (1, node)

    def _order(self, nodes: Iterable[int]) -> list[int]:
        """Nodes in the order sampling uses (see :meth:`_key`)."""
        return sorted(nodes, key=self._key)

    def discover_users(self, grid: Grid, timeout: float | None = None) -> dict[int, int]:
        """Ask every node for its user with one ``query`` message; returns node id -> user.

        Nodes whose reply fails or carries no ``user`` metric are left out (logged once).

        Raises
        ------
        ReplyError
            Two nodes report the same user (SuperNodes started with the same partition-id).
        """
        t = time.perf_counter()
        nodes = self._nodes(grid)
        content = RecordDict({CONFIG: ConfigRecord({"query": "user"})})
        replies = grid.send_and_receive(
            [Message(content=content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes],
            timeout=timeout)
        user_of: dict[int, int] = {}
        node_of: dict[int, int] = {}
        for m in replies:
            if m.has_error() or METRICS not in m.content.metric_records:
                continue
            user = m.content[METRICS].get("user")
            if not isinstance(user, (int, float)):
                continue
            src, user = m.metadata.src_node_id, int(user)
            if user in node_of:
                raise ReplyError(f"nodes {node_of[user]} and {src} both hold user {user}: start "
                                 "each SuperNode with its own --node-config partition-id")
            user_of[src], node_of[user] = user, src
        missing = len(nodes) - len(user_of)
        if missing:
            log(WARNING, "fedmm: %d of %d nodes did not report their user (their ClientApp has no "
                "query handler?); they are sampled by node id, which differs between runs",
                missing, len(nodes))
        log(INFO, "fedmm: users of %d of %d nodes known (%.1f s); those are sampled as users",
            len(user_of), len(nodes), time.perf_counter() - t)
        return user_of

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None):
        """:meth:`discover_users`, then Flower's round loop (``Strategy.start``)."""
        self._user_of = self.discover_users(grid, timeout)
        return super().start(grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds,
                             timeout=timeout, train_config=train_config,
                             evaluate_config=evaluate_config, evaluate_fn=evaluate_fn)

    def summary(self) -> None:
        log(INFO, "\t├──> fedmm: fraction-train %.3f, eval-every %d, aggregation %s, select %s",
            self.fraction_train, self.eval_every, self.aggregation, self.select_metric)

    # ----- train ------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._t0 = time.perf_counter()
        self._round = {"round": server_round}
        self._global = arrays_to_dict(arrays)
        nodes = self._order(self._nodes(grid))
        k = max(1, int(len(nodes) * self.fraction_train))
        sampled = self._order(self._rng.sample(nodes, k))
        cfg = ConfigRecord({**dict(config), "server-round": server_round, "aggregation": self.aggregation})
        payload = self.train_payload(server_round, sampled)
        messages, self._down = [], {}
        for nid in sampled:
            content = RecordDict({ARRAYS: arrays, CONFIG: cfg, **payload.get(nid, {})})
            self._down[nid] = record_bytes(content)
            messages.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN))
        self._round.update({"clients": len(sampled),
                            "bytes-down-per-client": sum(self._down.values()) / max(len(sampled), 1)})
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        # In user order, not arrival order, so that server work that depends on row order
        # (GFMFR's K-Means over the score functions) does not depend on timing.
        ok = sorted((m for m in replies if not m.has_error()),
                    key=lambda m: self._key(m.metadata.src_node_id))
        for m in replies:
            if m.has_error():
                log(WARNING, "train reply from node %d failed: %s", m.metadata.src_node_id, m.error.reason)
        if not ok:
            raise RuntimeError(f"round {server_round}: all {len(replies)} train replies failed; "
                               f"see the client errors above")
        assert self._global is not None
        states = []
        for m in ok:
            if ARRAYS not in m.content.array_records or METRICS not in m.content.metric_records:
                raise ReplyError(f"reply from node {m.metadata.src_node_id}: needs records "
                                 f"'{ARRAYS}' and '{METRICS}', got {list(m.content.keys())}")
            states.append(arrays_to_dict(m.content[ARRAYS]))
        check_reply_arrays(states, self._global, [m.metadata.src_node_id for m in ok])
        metrics = [dict(m.content[METRICS]) for m in ok]
        for src, mm in zip((m.metadata.src_node_id for m in ok), metrics):
            if not isinstance(mm.get("num-examples"), (int, float)):
                raise ReplyError(f"reply from node {src}: MetricRecord lacks a scalar 'num-examples'")
        weights = [float(mm["num-examples"]) for mm in metrics]
        # "mean": every client counts once (the official PFedRec server's plain mean).
        new = weighted_average(states, [1.0] * len(states) if self.aggregation == "mean" else weights)
        if self.aggregation == "itemwise":
            counts = []
            for m in ok:
                extras = m.content.array_records.get(EXTRAS)
                if extras is None or "item-counts" not in extras:
                    raise ReplyError(f"reply from node {m.metadata.src_node_id}: aggregation "
                                     f"'itemwise' needs ArrayRecord '{EXTRAS}' with 'item-counts'")
                counts.append(extras["item-counts"].numpy())
            new[ITEM_TABLE_KEY] = itemwise_average([s[ITEM_TABLE_KEY] for s in states], counts,
                                                   self._global[ITEM_TABLE_KEY])
        t = time.perf_counter()
        new = self.server_update(server_round, ok, new)
        server_s = time.perf_counter() - t
        agg = mean_metrics(metrics, weights, skip=("num-examples", "user"))
        up = [record_bytes(m.content) for m in ok]
        # Each client's [bytes received, bytes sent] this round, keyed by its user id (node id
        # when the reply names no user).
        client_bytes = {str(int(mm.get("user", m.metadata.src_node_id))):
                        [self._down.get(m.metadata.src_node_id, 0), b]
                        for m, mm, b in zip(ok, metrics, up)}
        self._round.update({"train-loss": agg.get("train-loss", float("nan")),
                            "failures": len(replies) - len(ok),
                            "bytes-up-per-client": sum(up) / len(ok),
                            "client-bytes": client_bytes,
                            "server-seconds": server_s, "train-seconds": time.perf_counter() - self._t0,
                            **self.round_info()})
        return dict_to_arrays(new), MetricRecord({"train-loss": self._round["train-loss"],
                                                  "num-examples": int(sum(weights))})

    # ----- evaluate ---------------------------------------------------------------------------
    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.eval_every == 0 or server_round == self.num_rounds

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        self._t_eval = time.perf_counter()
        if not self.is_eval_round(server_round):
            return []
        cfg = ConfigRecord({**dict(config), "server-round": server_round})
        content = RecordDict({ARRAYS: arrays, CONFIG: cfg})
        return [Message(content=content, dst_node_id=nid, message_type=MessageType.EVALUATE)
                for nid in self._nodes(grid)]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        # User order, not arrival order: the float mean over users is then the same every run.
        replies = sorted(replies, key=lambda m: self._key(m.metadata.src_node_id))
        result = None
        if replies:
            failed = [m for m in replies if m.has_error()]
            if failed:
                raise RuntimeError(f"round {server_round}: {len(failed)} of {len(replies)} evaluate "
                                   f"replies failed (first: {failed[0].error.reason}); an evaluation "
                                   f"over a subset of users would not be comparable")
            per_user = [{k: float(v) for k, v in dict(m.content[METRICS]).items()} for m in replies]
            agg = mean_metrics(per_user, skip=("num-examples",))
            agg["eval-users"] = len(per_user)
            self._round.update(agg)
            self._round["eval-seconds"] = time.perf_counter() - self._t_eval
            if self.select_metric not in agg:
                raise ReplyError(f"evaluate replies lack '{self.select_metric}' (select-metric); "
                                 f"they carry {sorted(agg)[:6]}...")
            if better(agg[self.select_metric], None if self.best is None else self.best[self.select_metric]):
                self.best = {"round": server_round, **agg}
            result = MetricRecord({k: v for k, v in agg.items()})
        self._round["seconds"] = time.perf_counter() - self._t0
        self.history.append(self._round)
        if self.on_round is not None:
            self.on_round(dict(self._round))
        return result
