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

Checkpoints (``checkpoint_every`` rounds, :mod:`fedmm.checkpoint`): at the end of such a round
(after ``aggregate_evaluate``) the global arrays and :meth:`state_dict` (the sampling RNG,
history, best round, process RNG states, and the method's state through the subclasses'
``state_dict`` / ``load_state_dict``) are saved under ``checkpoint_dir``. A resumed run
calls :meth:`restore` and then ``start(..., first_round=k + 1)``, which runs rounds
``k + 1 .. num_rounds`` in the same loop as a fresh run (:meth:`FedRecStrategy._rounds`, Flower's
``Strategy.start`` loop, which lets each round's replies go once aggregated).

The message contract (records, keys, shapes) is documented once, in :mod:`fedmm.protocol`;
replies are parsed there into :class:`~fedmm.protocol.TrainReply` once per round and handed
to :meth:`server_update`.
"""
from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import log_strategy_start_info

from fedmm import checkpoint as ckpt
from fedmm.secagg import SecAggParams, SecAggPlusRound

from fedmm.protocol import (AGGREGATION, ARRAYS, CONFIG, ITEM_COUNTS, ITEM_TABLE_KEY, METRICS,
                            FRESH_PREFIX, NUM_EXAMPLES, QUERY, SERVER_ROUND, TRAIN_LOSS, USER,
                            SECAGG_MASKED, TrainReply,
                            arrays_to_dict, dict_to_arrays, record_bytes)
from strategies.aggregation import (ReplyError, better, check_reply_arrays, itemwise_average,
                                    mean_metrics, weighted_average)


class FedRecStrategy(FedAvg):
    """Federated recommendation strategy with per-node payloads and server-side hooks.

    Parameters
    ----------
    fraction_train : float, default 0.1
        Fraction of nodes sampled per training round (at least one).
    eval_every : int, default 10
        Evaluate all nodes every this many rounds (and at the last round).
    select_metric : str, default "valid_sampled_ndcg@10"
        Validation metric that picks the best round; every evaluate reply must carry it.
    aggregation : {"fedavg", "mean", "itemwise"}, default "fedavg"
        ``fedavg``: shared arrays averaged weighted by ``num-examples``; ``mean``: unweighted
        (each client once); ``itemwise``: as ``fedavg``, but each item row averaged over the
        clients that trained it (replies carry ``extras/item-counts``).
    seed : int, default 0
        Seeds client sampling.
    on_round : callable, optional
        Called with each round's record (a JSON-serialisable dict) as soon as it is complete.
    min_available_nodes : int, default 1
        Wait for this many nodes before sampling.
    item_table_key : str, default "item_emb.weight"
        Name of the shared item table among the arrays (item-wise aggregation and the method
        strategies read it).
    node_timeout : float, default 300
        Seconds to wait for ``min_available_nodes`` before round 1, failing with a clear error
        after that. Later rounds sample from the nodes connected then (a lost node costs only
        its own updates; the round record counts them in ``nodes``).
    min_train_replies : int, default 1
        A training round with fewer successful replies fails the run; failed replies are
        logged and listed in the round record (``failures``, ``failed-users``).
    max_eval_failures : float, default 0.0
        Share of evaluate replies that may fail (lost nodes, timeouts) before the run fails;
        the mean is then over the users that answered, and the round record says how many did
        not (``eval-failures``, ``eval-failed-users``). 0: every user must answer.
    num_rounds : int, optional
        Only for driving the hooks by hand (tests); :meth:`start`'s ``num_rounds`` is the one
        that counts and replaces it.
    checkpoint_every : int, default 0
        Save a checkpoint into ``checkpoint_dir`` after every this many rounds and after the
        last round (0: never).
    checkpoint_dir : path, optional
        The run directory the checkpoint goes to (``<dir>/checkpoint/``); needed when
        ``checkpoint_every > 0``.
    secagg : fedmm.secagg.SecAggParams, optional
        Secure aggregation (SecAgg+, :mod:`fedmm.secagg`): each training round runs the
        protocol's four stages and the server sees only the sums of the shared arrays (and of
        the weights, item counts and :meth:`secagg_sum_extras`); the per-reply ``arrays`` are
        never seen. Clients that fail after sharing keys count as failed replies
        (``min-train-replies`` as without it); the round also needs the reconstruction
        threshold of clients left, else it fails the run.
    secagg_eval : bool, default False
        Evaluation through SecAgg+ as well (needs ``secagg``): each evaluation runs the four
        stages with all users, every user's metrics are one masked vector, and the server
        reads only their mean (to the quantisation step), never one user's metrics.
    """

    def __init__(self, *, fraction_train: float = 0.1, eval_every: int = 10,
                 select_metric: str = "valid_sampled_ndcg@10", aggregation: str = "fedavg",
                 seed: int = 0, on_round: Callable[[dict[str, Any]], None] | None = None,
                 min_available_nodes: int = 1, item_table_key: str = ITEM_TABLE_KEY,
                 node_timeout: float = 300.0, min_train_replies: int = 1,
                 max_eval_failures: float = 0.0, num_rounds: int | None = None,
                 checkpoint_every: int = 0, checkpoint_dir: str | Path | None = None,
                 secagg: SecAggParams | None = None, secagg_eval: bool = False) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=1.0, min_train_nodes=1,
                         min_evaluate_nodes=1, min_available_nodes=min_available_nodes)
        if aggregation not in ("fedavg", "mean", "itemwise"):
            raise ValueError(f"aggregation must be 'fedavg', 'mean' or 'itemwise', got {aggregation!r}")
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        if min_train_replies < 1 or not 0.0 <= max_eval_failures < 1.0:
            raise ValueError(f"need min_train_replies >= 1 and 0 <= max_eval_failures < 1, got "
                             f"{min_train_replies} and {max_eval_failures}")
        if checkpoint_every < 0 or (checkpoint_every > 0 and checkpoint_dir is None):
            raise ValueError(f"checkpoint_every must be >= 0 and needs a checkpoint_dir, got "
                             f"{checkpoint_every} and {checkpoint_dir}")
        self.checkpoint_every = int(checkpoint_every)
        if secagg_eval and secagg is None:
            raise ValueError("secagg_eval needs the SecAgg+ parameters (secagg)")
        self.secagg = secagg
        self.secagg_eval = bool(secagg_eval)
        self._secagg_round: SecAggPlusRound | None = None
        self._secagg_eval_round: SecAggPlusRound | None = None
        #: Secure aggregation: this round's summed extras (:meth:`secagg_sum_extras`).
        self.secagg_sums: dict[str, np.ndarray] = {}
        self._seed = int(seed)
        self._timeout: float | None = None
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.resumed_from: list[int] = []        # checkpoint rounds this run was resumed from
        self._arrays_out: dict[str, np.ndarray] | None = None   # global arrays after the round
        self.min_train_replies = int(min_train_replies)
        self.max_eval_failures = float(max_eval_failures)
        self._started = False                    # discover_users done: no more waiting
        self.num_rounds = num_rounds
        self.eval_every = eval_every
        self.select_metric = select_metric
        self.aggregation = aggregation
        self.item_table_key = item_table_key
        self.node_timeout = float(node_timeout)
        self.on_round = on_round
        self._rng = random.Random(seed)
        self.user_of: dict[int, int] = {}        # node id -> user (query round): the one map
        self._global: dict[str, np.ndarray] | None = None
        self._down: dict[int, int] = {}          # node id -> bytes of its train message
        self._round: dict[str, Any] = {}         # this round's record, filled by four hooks
        self._t0 = 0.0
        self._t_eval = 0.0
        self._eval_sent: set[int] = set()        # nodes asked to evaluate this round
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    # ----- hooks for subclasses ---------------------------------------------------------------
    def train_payload(self, server_round: int, node_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Extra records per node for the train messages (base: none)."""
        return {}

    def train_config(self, server_round: int) -> dict[str, Any]:
        """Extra train-config entries of this round (base: none)."""
        return {}

    def server_update(self, server_round: int, replies: list[TrainReply],
                      arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side work after aggregation; returns the (possibly changed) global arrays.

        ``replies`` are the round's successful replies, parsed, in user order."""
        return arrays

    def round_info(self) -> dict[str, Any]:
        """Extra fields for this round's record (base: none)."""
        return {}

    def secagg_sum_extras(self) -> tuple[str, ...]:
        """Under secure aggregation, the integer ``"extras"`` the method needs only summed
        over the round's clients: they are summed securely and handed to
        :meth:`server_update` in :attr:`secagg_sums` instead of per reply (base: none)."""
        return ()

    def initial_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Server-side pre-training before round 1 may replace the initial shared arrays
        (e.g. FedSLLM initialises the item table from item text); base: unchanged."""
        return arrays

    def finish(self) -> dict[str, Any]:
        """Called once after the last round (write plots, close logs); returns extra fields
        for ``final.json`` (base: none)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly as this one would: the sampling
        RNG, history, best round, the process RNG states, the resume list. Values are torch
        tensors and plain containers (``torch.load(weights_only=True)`` reads them back).
        Subclasses add their method's state under their own keys (``super().state_dict()``
        first) and restore it in :meth:`load_state_dict`."""
        import json

        version, internal, gauss = self._rng.getstate()
        return {"sampling-rng": [version, list(internal), gauss],
                # history/best as JSON text: floats (NaN included) and nested dicts exactly
                "history": json.dumps(self.history, default=ckpt.json_default),
                "best": json.dumps(self.best, default=ckpt.json_default),
                "resumed-from": list(self.resumed_from), "rng": ckpt.rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the process RNG states included)."""
        import json

        version, internal, gauss = state["sampling-rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])
        self.resumed_from = list(state["resumed-from"])
        ckpt.set_rng_state(state["rng"])

    def rewind_outputs(self, server_round: int) -> None:
        """A resumed run redoes the rounds after ``server_round``: drop them from this
        strategy's own per-round output files (base: none; the ServerApp rewinds
        ``rounds.jsonl``)."""

    # ----- checkpoints ------------------------------------------------------------------------
    def is_checkpoint_round(self, server_round: int) -> bool:
        return self.checkpoint_every > 0 and (server_round % self.checkpoint_every == 0
                                              or server_round == self.num_rounds)

    def save_checkpoint(self, server_round: int) -> None:
        """Write the checkpoint of ``server_round`` (global arrays after it, :meth:`state_dict`)."""
        assert self.checkpoint_dir is not None and self._arrays_out is not None
        t = time.perf_counter()
        ckpt.save_checkpoint(self.checkpoint_dir, server_round, self._arrays_out, self.state_dict(),
                             info={"num-rounds": self.num_rounds, "strategy-class": type(self).__name__})
        log(INFO, "fedmm: checkpoint of round %d saved (%.2f s)", server_round, time.perf_counter() - t)

    def restore(self, run_dir: str | Path) -> tuple[int, dict[str, np.ndarray]]:
        """Load the checkpoint in ``run_dir`` into this strategy (built with the same config)
        and rewind its own output files; returns ``(round, global arrays)``: continue with
        ``start(initial_arrays=arrays, first_round=round + 1)``.

        Raises
        ------
        fedmm.checkpoint.CheckpointError
            No readable checkpoint.
        """
        server_round, arrays, state = ckpt.load_checkpoint(Path(run_dir))
        self.load_state_dict(state)
        self.resumed_from.append(server_round)
        self.rewind_outputs(server_round)
        return server_round, arrays

    # ----- sampling ---------------------------------------------------------------------------
    def _nodes(self, grid: Grid) -> list[int]:
        """Connected nodes (sorted). Before round 1, waits up to ``node_timeout`` for
        ``min_available_nodes`` of them; later, returns whoever is connected (at least one).

        Raises
        ------
        RuntimeError
            Fewer nodes than ``min_available_nodes`` after ``node_timeout`` seconds (before
            round 1), or no node at all for ``node_timeout`` seconds (later).
        """
        if self._started:
            t = time.monotonic()
            while not (nodes := sorted(grid.get_node_ids())):
                if time.monotonic() - t > self.node_timeout:
                    raise RuntimeError(f"no node connected for {self.node_timeout:.0f}s")
                time.sleep(0.5)
            if len(nodes) < self.min_available_nodes:
                log(WARNING, "fedmm: %d of %d nodes connected; sampling among those",
                    len(nodes), self.min_available_nodes)
            return nodes
        t = time.monotonic()
        last_log = -1.0
        while len(nodes := sorted(grid.get_node_ids())) < self.min_available_nodes:
            waited = time.monotonic() - t
            if waited > self.node_timeout:
                raise RuntimeError(f"only {len(nodes)} of {self.min_available_nodes} nodes connected "
                                   f"after {self.node_timeout:.0f}s; start the missing SuperNodes "
                                   f"or lower min_available_nodes")
            if waited - last_log >= 10:
                log(INFO, "Waiting for nodes: %d of %d connected", len(nodes), self.min_available_nodes)
                last_log = waited
            time.sleep(0.5)
        return nodes

    def _key(self, node: int) -> tuple[int, int]:
        """Sort key of a node: by user; nodes of unknown user last, by node id."""
        return (0, self.user_of[node]) if node in self.user_of else (1, node)

    def _order(self, nodes: Iterable[int]) -> list[int]:
        """Nodes in the order sampling uses (see :meth:`_key`)."""
        return sorted(nodes, key=self._key)

    def discover_users(self, grid: Grid, timeout: float | None = None) -> dict[int, int]:
        """Ask every node for its user with one ``query`` message; returns node id -> user.

        Nodes whose reply fails or carries no ``user`` metric are left out (one warning).

        Raises
        ------
        ReplyError
            Two nodes report the same user (SuperNodes started with the same partition-id).
        """
        t = time.perf_counter()
        nodes = self._nodes(grid)
        content = RecordDict({CONFIG: ConfigRecord({QUERY: USER})})
        replies = grid.send_and_receive(
            [Message(content=content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes],
            timeout=timeout)
        user_of: dict[int, int] = {}
        node_of: dict[int, int] = {}
        for m in replies:
            if m.has_error() or METRICS not in m.content.metric_records:
                continue
            user = m.content[METRICS].get(USER)
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
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None,
              first_round: int = 1):
        """:meth:`discover_users`, then the round loop (:meth:`_rounds`, Flower's
        ``Strategy.start`` loop) for ``num_rounds`` rounds (also the last round, which is
        always evaluated).

        ``first_round > 1`` (a run resumed with :meth:`restore`): rounds ``first_round ..
        num_rounds`` only, ``initial_arrays`` being the global arrays after round
        ``first_round - 1`` (the same loop)."""
        self.num_rounds = int(num_rounds)
        self._timeout = timeout
        self.user_of = self.discover_users(grid, timeout)
        self._started = True
        return self._rounds(grid, initial_arrays, max(1, int(first_round)), timeout,
                            train_config, evaluate_config, evaluate_fn)

    def _rounds(self, grid: Grid, arrays: ArrayRecord, first_round: int, timeout: float,
                train_config: ConfigRecord | None, evaluate_config: ConfigRecord | None,
                evaluate_fn) -> Result:
        """Rounds ``first_round .. num_rounds``: Flower's ``Strategy.start``
        (flwr/serverapp/strategy/strategy.py, flwr 1.42) with the same hooks in the same order
        (``configure_train``, ``send_and_receive``, ``aggregate_train``, ``configure_evaluate``,
        ``send_and_receive``, ``aggregate_evaluate``, ``evaluate_fn``) and the same log.

        Two differences. A resumed run (``first_round > 1``) starts from the restored state and
        has no initial (round 0) evaluation. And each round's replies are let go as soon as
        they are aggregated: Flower's loop keeps the previous round's train replies until the
        next round's have arrived, so two rounds of uploads (each reply a copy of the shared
        arrays: 604 x 463 KiB at ML-1M) were held at once (docs/benchmark.md, "Memory:
        the round's replies")."""
        if first_round > 1:
            log(INFO, "Resuming %s strategy at round %d of %d", self.__class__.__name__,
                first_round, self.num_rounds)
        else:
            log(INFO, "Starting %s strategy:", self.__class__.__name__)
            log_strategy_start_info(self.num_rounds, arrays, train_config, evaluate_config)
        self.summary()
        log(INFO, "")
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        t_start = time.time()
        if evaluate_fn and first_round == 1:
            res = evaluate_fn(0, arrays)
            log(INFO, "Initial global evaluation results: %s", res)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        for current_round in range(first_round, self.num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %s/%s]", current_round, self.num_rounds)
            replies = grid.send_and_receive(
                messages=self.configure_train(current_round, arrays, train_config, grid),
                timeout=timeout)
            agg_arrays, agg_train_metrics = self.aggregate_train(current_round, replies)
            del replies   # the uploads, no longer needed (see the docstring)
            if agg_arrays is not None:
                result.arrays = agg_arrays
                arrays = agg_arrays
            if agg_train_metrics is not None:
                log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_train_metrics)
                result.train_metrics_clientapp[current_round] = agg_train_metrics
            replies = grid.send_and_receive(
                messages=self.configure_evaluate(current_round, arrays, evaluate_config, grid),
                timeout=timeout)
            agg_evaluate_metrics = self.aggregate_evaluate(current_round, replies)
            del replies
            if agg_evaluate_metrics is not None:
                log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_evaluate_metrics)
                result.evaluate_metrics_clientapp[current_round] = agg_evaluate_metrics
            if evaluate_fn:
                log(INFO, "Global evaluation")
                res = evaluate_fn(current_round, arrays)
                log(INFO, "\t└──> MetricRecord: %s", res)
                if res is not None:
                    result.evaluate_metrics_serverapp[current_round] = res
        log(INFO, "")
        log(INFO, "Strategy execution finished in %.2fs", time.time() - t_start)
        log(INFO, "")
        log(INFO, "Final results:")
        log(INFO, "")
        for line in io.StringIO(str(result)):
            log(INFO, "\t%s", line.strip("\n"))
        log(INFO, "")
        return result

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
        cfg = ConfigRecord({**dict(config), **self.train_config(server_round),
                            SERVER_ROUND: server_round, AGGREGATION: self.aggregation})
        payload = self.train_payload(server_round, sampled)
        messages, self._down = [], {}
        for nid in sampled:
            content = RecordDict({ARRAYS: arrays, CONFIG: cfg, **payload.get(nid, {})})
            self._down[nid] = record_bytes(content)
            messages.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN))
        self._round.update({"clients": len(sampled), "nodes": len(nodes),
                            "bytes-down-per-client": sum(self._down.values()) / max(len(sampled), 1)})
        if self.secagg is not None:
            # Stages 1-2 of SecAgg+ now; the train messages become stage 3 (only to the
            # clients that shared their keys; the others count as failed replies).
            self._secagg_round = SecAggPlusRound(self.secagg, grid, server_round, seed=self._seed,
                                                 timeout=self._timeout,
                                                 min_replies=self.min_train_replies)
            messages = self._secagg_round.prepare(messages, aggregation=self.aggregation,
                                                  item_key=self.item_table_key,
                                                  sum_extras=self.secagg_sum_extras())
        return messages

    def parse_replies(self, server_round: int, replies: Iterable[Message]) -> list[TrainReply]:
        """The successful replies, parsed and checked, in user order (not arrival order, so
        that server work depending on row order, e.g. GFMFR's K-Means, does not depend on
        timing). Failed replies are logged and counted in the round record.

        Raises
        ------
        RuntimeError
            Every reply failed.
        ReplyError
            A reply breaks the contract of :mod:`fedmm.protocol`.
        """
        replies = list(replies)
        ok = sorted((m for m in replies if not m.has_error()),
                    key=lambda m: self._key(m.metadata.src_node_id))
        failed = [m for m in replies if m.has_error()]
        for m in failed:
            log(WARNING, "train reply from node %d failed: %s", m.metadata.src_node_id, m.error.reason)
        if len(ok) < self.min_train_replies:
            raise RuntimeError(f"round {server_round}: {len(ok)} of {len(replies)} train replies "
                               f"succeeded, fewer than min-train-replies = {self.min_train_replies}"
                               f"; see the client errors above")
        # A node that died or timed out sends nothing: count it as failed too.
        lost = [m.metadata.src_node_id for m in failed] + sorted(
            set(self._down) - {m.metadata.src_node_id for m in replies})
        self._round["failures"] = len(lost)
        if lost:
            self._round["failed-users"] = [self.user_of.get(n, -1) for n in lost]
        secagg = self.secagg is not None
        parsed = [TrainReply.parse(m, self.user_of.get(m.metadata.src_node_id), secagg=secagg)
                  for m in ok]
        assert self._global is not None
        if not secagg:  # (under SecAgg+ the clients check their arrays: fedmm.secagg)
            check_reply_arrays([r.arrays for r in parsed], self._global, [r.node for r in parsed])
        return parsed

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        parsed = self.parse_replies(server_round, replies)
        assert self._global is not None
        weights = [r.num_examples for r in parsed]
        if self.secagg is not None:
            new = self._secure_average(parsed)
        else:
            states = [r.arrays for r in parsed]
            # "mean": every client counts once (the official PFedRec server's plain mean).
            new = weighted_average(states, [1.0] * len(states) if self.aggregation == "mean" else weights)
        if self.aggregation == "itemwise" and self.secagg is None:
            key = self.item_table_key
            counts = [r.extra(ITEM_COUNTS, "aggregation 'itemwise'") for r in parsed]
            new[key] = itemwise_average([s[key] for s in states], counts, self._global[key])
        t = time.perf_counter()
        new = self.server_update(server_round, parsed, new)
        server_s = time.perf_counter() - t
        agg = mean_metrics([r.metrics for r in parsed], weights, skip=(NUM_EXAMPLES, USER))
        # Each client's [bytes received, bytes sent] this round, keyed by its user id (node id
        # when the user is unknown).
        client_bytes = {str(r.user if r.user is not None else r.node): [self._down.get(r.node, 0), r.bytes_up]
                        for r in parsed}
        # train-eval: the sampled clients' freshly trained models (a cheap per-round curve).
        # Each user counts once, as in the all-user evaluation.
        self._round.update(mean_metrics([{k: v for k, v in r.metrics.items()
                                          if k.startswith(FRESH_PREFIX)} for r in parsed]))
        self._round.update({TRAIN_LOSS: agg.get(TRAIN_LOSS, float("nan")),
                            "bytes-up-per-client": sum(r.bytes_up for r in parsed) / len(parsed),
                            "client-bytes": client_bytes,
                            "server-seconds": server_s, "train-seconds": time.perf_counter() - self._t0,
                            **self.round_info()})
        self._arrays_out = new
        return dict_to_arrays(new), MetricRecord({TRAIN_LOSS: self._round[TRAIN_LOSS],
                                                  NUM_EXAMPLES: int(sum(weights))})

    def _secure_average(self, parsed: list[TrainReply]) -> dict[str, np.ndarray]:
        """SecAgg+ stage 4 and the averages from the sums (the same weighting as without it);
        the summed extras go to :attr:`secagg_sums`."""
        assert self._secagg_round is not None and self._global is not None
        sa = self._secagg_round
        sums = sa.unmask({r.node: r.masked for r in parsed})
        new, self.secagg_sums = sa.decode(sums, self._global, self.item_table_key)
        self._round.update({"secagg-seconds": sa.seconds, "secagg-bytes": sa.bytes,
                            "secagg-threshold": sa.threshold, "secagg-shares": sa.num_shares,
                            "secagg-dropped": {k: [self.user_of.get(n, -1) for n in v]
                                               for k, v in sa.dropped.items() if v}})
        return new

    # ----- evaluate ---------------------------------------------------------------------------
    def is_eval_round(self, server_round: int) -> bool:
        return server_round % self.eval_every == 0 or server_round == self.num_rounds

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        self._t_eval = time.perf_counter()
        if not self.is_eval_round(server_round):
            return []
        cfg = ConfigRecord({**dict(config), SERVER_ROUND: server_round})
        content = RecordDict({ARRAYS: arrays, CONFIG: cfg})
        nodes = self._nodes(grid)
        self._eval_sent = set(nodes)
        messages = [Message(content=content, dst_node_id=nid, message_type=MessageType.EVALUATE)
                    for nid in nodes]
        if self.secagg_eval:
            # Stages 1-2 now (nodes that fail them count as lost replies); the evaluate
            # messages are stage 3.
            assert self.secagg is not None
            # All users at once: a coarser quantisation if needed (SecAggParams.for_clients).
            self._secagg_eval_round = SecAggPlusRound(self.secagg.for_clients(len(nodes)),
                                                      grid, server_round,
                                                      seed=self._seed, timeout=self._timeout,
                                                      tag="-eval")
            messages = self._secagg_eval_round.prepare(
                messages, aggregation="mean", item_key="", message_type=MessageType.EVALUATE)
        return messages

    def _secure_eval_metrics(self, server_round: int, replies: list[Message]) -> list[dict[str, float]]:
        """Secure evaluation, stage 4: the mean of the users' metrics from the masked replies,
        returned as one pseudo-user's metrics (so the mean below is that mean)."""
        from fedmm.secagg import EVAL_METRICS, METRIC_NAMES

        sa = self._secagg_eval_round
        assert sa is not None
        names = {tuple(m.content[METRIC_NAMES]["names"]) for m in replies}
        if len(names) != 1:
            raise ReplyError(f"round {server_round}: secure evaluation replies name different "
                             f"metrics: {sorted(names)[:2]}")
        (keys,) = names
        sums = sa.unmask({m.metadata.src_node_id: arrays_to_dict(m.content[SECAGG_MASKED])
                          for m in replies})
        mean, _ = sa.decode(sums, {EVAL_METRICS: np.zeros(len(keys))}, "")
        self._round.update({"secagg-eval-seconds": sa.seconds, "secagg-eval-bytes": sa.bytes,
                            "secagg-eval-dropped": {k: [self.user_of.get(n, -1) for n in v]
                                                    for k, v in sa.dropped.items() if v}})
        return [dict(zip(keys, map(float, mean[EVAL_METRICS])))]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        # User order, not arrival order: the float mean over users is then the same every run.
        replies = sorted(replies, key=lambda m: self._key(m.metadata.src_node_id))
        result = None
        if replies:
            failed = [m for m in replies if m.has_error()]
            expected = max(len(self._eval_sent), len(replies))
            missing = sorted(self._eval_sent - {m.metadata.src_node_id for m in replies})
            lost = len(failed) + len(missing)
            if lost > self.max_eval_failures * expected:
                first = failed[0].error.reason if failed else "no reply before the timeout"
                raise RuntimeError(f"round {server_round}: {lost} of {expected} evaluate replies "
                                   f"failed or never came (first: {first}); max-eval-failures = "
                                   f"{self.max_eval_failures} allows "
                                   f"{int(self.max_eval_failures * expected)}")
            if lost:
                log(WARNING, "round %d: %d of %d evaluate replies failed or never came; the "
                    "mean is over the %d users that answered", server_round, lost, expected,
                    expected - lost)
                self._round["eval-failures"] = lost
                self._round["eval-failed-users"] = [
                    self.user_of.get(n, -1) for n in [m.metadata.src_node_id for m in failed] + missing]
            replies = [m for m in replies if not m.has_error()]
            if self.secagg_eval:
                per_user = self._secure_eval_metrics(server_round, replies)
            else:
                per_user = [{k: float(v) for k, v in dict(m.content[METRICS]).items()}
                            for m in replies]
            agg = mean_metrics(per_user, skip=(NUM_EXAMPLES,))
            agg["eval-users"] = len(replies)
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
        # The round is complete (its record is written): checkpoint it, before the next one.
        if self.is_checkpoint_round(server_round) and self._arrays_out is not None:
            self.save_checkpoint(server_round)
        return result
