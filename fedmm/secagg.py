"""Secure aggregation (SecAgg+) for fedmm's Message-API strategies: the server sees only sums.

Flower's SecAgg+ (``flwr.server.workflow.SecAggPlusWorkflow`` with the ClientApp mod
``flwr.client.mod.secaggplus_mod``) is written for the legacy API (a ``LegacyContext``,
``configure_fit``/``aggregate_fit``, ``FitRes`` records), so it cannot drive fedmm's strategies
or read fedmm's replies (``"arrays"``/``"metrics"``/``"extras"``, :mod:`fedmm.protocol`). This
module runs the same protocol with the same four stages and parameters, built from Flower's own
SecAgg+ pieces (key agreement, Fernet encryption, Shamir shares, stochastic quantisation,
seeded masks; and the client-side setup / share-keys / unmask stage handlers of Flower's mod,
which are used unchanged):

1. **setup** — the server sends the parameters; each client makes two key pairs and returns
   the public keys;
2. **share keys** — each client gets its neighbours' public keys and returns, encrypted for
   each neighbour, Shamir shares of its private-mask seed and of its first secret key;
3. **collect masked vectors** — the ordinary train message (the model, the method payload) plus
   the forwarded shares; the ClientApp trains as always and :func:`secagg_mod` replaces the
   reply's arrays by the masked, quantised, weighted update (:func:`encode_update`,
   :func:`mask_vector`);
4. **unmask** — the clients still there return the shares the server needs: private-mask
   seeds of the clients that answered stage 3, first secret keys of those that dropped after
   sharing keys; the server removes the masks and gets the sums (:class:`SecAggPlusRound`).

What is summed (:func:`encode_update`), per client ``u`` with weight ``w_u`` (``num-examples``
for ``fedavg``, 1 for ``mean``) and ``r_u = w_u / max_weight`` quantised to ``q_u =
round(r_u * quantization_range)``: ``q_u`` itself, and every shared array times ``q_u /
quantization_range``, quantised stochastically on ``[-clipping_range, clipping_range]``. The
server divides the sum of the second by the sum of the first: FedAvg. ``itemwise`` sends per-
item weights (the item counts) the same way and weights the item table's rows by them.
Integer extras the strategy only needs summed (FedSLLM's ``prototype-counts``) are added as
they are. Everything else of the reply (scalar metrics such as ``num-examples`` and
``train-loss``, other extras) stays in the clear, as in Flower's SecAgg+.

Differences from Flower's workflow: the neighbour graph is drawn from a seeded RNG (not the
process ``random``), quantisation draws its rounding from a seeded stream (a run is
reproducible; the process RNGs are untouched); clients that drop before sharing keys are left
out instead of failing the round, and a client that drops after sharing keys has only the
pairwise masks with the neighbours that sent masked vectors removed.
"""
from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import (SecAggPlusState, _setup,
                                                               _share_keys, _unmask, check_configs,
                                                               check_stage)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.logger import log
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (parameters_addition, parameters_mod,
                                                                parameters_subtraction)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_constants import (RECORD_KEY_CONFIGS,
                                                                 RECORD_KEY_STATE, Key, Stage)
from flwr.common.secure_aggregation.secaggplus_utils import (pseudo_rand_gen,
                                                             share_keys_plaintext_separate)
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from fedmm.protocol import (ARRAYS, EXTRAS, ITEM_COUNTS, METRICS, NUM_EXAMPLES, SECAGG_MASKED,
                            SERVER_ROUND, arrays_to_dict)

#: Collect-stage config keys fedmm adds to Flower's (the client must know what to sum).
AGGREGATION_KEY, ITEM_KEY, SUMS_KEY = "fedmm-aggregation", "fedmm-item-key", "fedmm-sum-extras"
MAX_COUNT_KEY = "fedmm-max-count"
#: Secure evaluation (``secagg-eval``): the array of a user's evaluation metrics, and the
#: ConfigRecord of an evaluate reply that names them (names are not private; values are).
EVAL_METRICS, METRIC_NAMES = "eval-metrics", "secagg-metric-names"

#: Entry names of the masked vector (ArrayRecord ``secagg-masked``), in masking order.
WEIGHT, ITEM_WEIGHTS, SUM_PREFIX, ARRAY_PREFIX = "weight", "item-weights", "sum/", "array/"


@dataclass(frozen=True)
class SecAggParams:
    """SecAgg+ parameters (Flower's ``SecAggPlusWorkflow`` arguments, same meaning).

    ``num_shares`` / ``reconstruction_threshold``: a value ``<= 1`` is a fraction (of the
    sampled clients / of ``num_shares``), a value ``> 1`` a number."""

    num_shares: float = 7.0
    reconstruction_threshold: float = 0.5
    clipping_range: float = 8.0
    quantization_range: int = 2 ** 22
    modulus_range: int = 2 ** 32
    max_weight: float = 100000.0
    #: itemwise: the largest per-item count (its rows are weighted by ``count / max_count``).
    max_count: float = 100.0

    def flower_values(self) -> tuple[int | float, int | float]:
        """``(num_shares, reconstruction_threshold)`` typed as Flower reads them (int: a
        number, float: a fraction)."""
        def typed(v: float) -> int | float:
            return float(v) if v <= 1 else int(round(v))
        return typed(self.num_shares), typed(self.reconstruction_threshold)

    def check(self) -> None:
        """Flower's own checks (``SecAggPlusWorkflow._check_init_params``).

        Raises
        ------
        ValueError
            A parameter Flower rejects (the message is Flower's)."""
        from flwr.server.workflow import SecAggPlusWorkflow

        shares, threshold = self.flower_values()
        if self.clipping_range <= 0:
            raise ValueError("`clipping_range` must be greater than 0.")
        if self.max_count <= 0:
            raise ValueError("`max_count` must be greater than 0.")
        SecAggPlusWorkflow(shares, threshold, max_weight=self.max_weight,
                           clipping_range=self.clipping_range,
                           quantization_range=int(self.quantization_range),
                           modulus_range=int(self.modulus_range))

    def for_clients(self, k: int) -> "SecAggParams":
        """These parameters with the quantisation range lowered, if needed, to the largest
        power of 2 whose sum over ``k`` clients stays below half the modulus (secure
        evaluation sums every user at once: 943 users need 2**21 with the defaults).

        Raises
        ------
        SecAggError
            Not even 2**8 levels would fit (raise ``secagg-modulus-range``)."""
        q = int(self.quantization_range)
        while q > 1 and 2 * k * q >= int(self.modulus_range):
            q //= 2
        if q < 2 ** 8:
            raise SecAggError(f"secure aggregation of {k} clients: secagg-modulus-range "
                              f"{self.modulus_range} leaves fewer than 2**8 quantisation levels; "
                              "raise secagg-modulus-range (a power of 2)")
        return replace(self, quantization_range=q)

    def round_sizes(self, num_samples: int) -> tuple[int, int]:
        """``(num_shares, threshold)`` for ``num_samples`` sampled clients, as Flower's
        ``setup_stage`` computes them (an even number of shares below the sample size gets one
        more; a threshold of at least 2)."""
        shares, threshold = self.flower_values()
        if isinstance(shares, float):
            n = round(shares * num_samples)
            if n < num_samples and n & 1 == 0:
                n += 1
            if n <= 2:
                n = num_samples
        else:
            n = shares
        n = min(n, num_samples)
        t = max(round(threshold * n), 2) if isinstance(threshold, float) else threshold
        return n, t


# ----- client side -------------------------------------------------------------------------
def _seeded_quantize(values: np.ndarray, clip: float, target: int, seed: Sequence[int]) -> np.ndarray:
    """Flower's stochastic quantisation with its rounding drawn from ``seed`` (the process's
    global NumPy RNG, which Flower's quantiser uses, is restored afterwards)."""
    saved = np.random.get_state()
    np.random.seed(int(np.random.SeedSequence([int(s) for s in seed]).generate_state(1)[0]))
    try:
        return quantize([values], clip, target)[0].astype(np.int64)
    finally:
        np.random.set_state(saved)


def _quantised_weight(w: np.ndarray | float, params: SecAggParams, what: str) -> np.ndarray:
    limit, key = ((params.max_count, "secagg-max-count") if what == "an item count"
                  else (params.max_weight, "secagg-max-weight"))
    ratio = np.asarray(w, dtype=np.float64) / limit
    if np.any(np.abs(ratio) > 1):
        raise ValueError(f"secure aggregation: {what} {float(np.max(np.abs(w)))} exceeds "
                         f"{key} = {limit} (the sum could overflow); raise {key}")
    return np.rint(ratio * params.quantization_range).astype(np.int64)


def encode_update(arrays: Mapping[str, np.ndarray], weight: float, params: SecAggParams, *,
                  aggregation: str, item_key: str = "", item_counts: np.ndarray | None = None,
                  sums: Mapping[str, np.ndarray] | None = None,
                  seed: Sequence[int] = (0,)) -> dict[str, np.ndarray]:
    """One client's contribution to the secure sum, int64 entries in masking order.

    ``weight`` entry: ``q = round(w / max_weight * quantization_range)`` with ``w = weight``
    (``fedavg``/``itemwise``) or ``max_weight`` (``mean``: every client the same, the finest
    quantisation); ``item-weights`` (``itemwise``): the same for each row's count over
    ``max_count``; ``sum/<k>``: integer ``sums`` as they are; ``array/<name>``: the array
    times its weight ``q / quantization_range`` (per row for the item table under itemwise),
    quantised (Flower's ``quantize``, rounding drawn from ``seed``).

    Raises
    ------
    ValueError
        A weight above ``max_weight``, non-finite arrays, non-integer sums, or itemwise
        aggregation without item counts.
    """
    target = int(params.quantization_range)
    w = params.max_weight if aggregation == "mean" else float(weight)
    q = _quantised_weight(w, params, "num-examples")
    out: dict[str, np.ndarray] = {WEIGHT: q.reshape(1)}
    row_q = None
    if aggregation == "itemwise":
        if item_counts is None:
            raise ValueError("secure itemwise aggregation needs the reply's item counts")
        row_q = _quantised_weight(item_counts, params, "an item count")
        out[ITEM_WEIGHTS] = row_q
    for k, v in (sums or {}).items():
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"secure aggregation sums integers; extras '{k}' is {v.dtype}")
        out[SUM_PREFIX + k] = v.astype(np.int64)
    clipped = 0
    for i, (name, x) in enumerate(arrays.items()):
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"'{name}' contains NaN or inf (diverged local training? lower 'lr')")
        if row_q is not None and name == item_key:
            scale = (row_q / target).reshape((-1,) + (1,) * (x.ndim - 1))
        else:
            scale = float(q) / target
        scaled = x * scale
        clipped += int(np.sum(np.abs(scaled) > params.clipping_range))
        out[ARRAY_PREFIX + name] = _seeded_quantize(scaled, params.clipping_range, target,
                                                    [*seed, i])
    if clipped:
        log(WARNING, "secure aggregation: %d weighted values outside +-secagg-clipping-range = "
            "%s were clipped", clipped, params.clipping_range)
    return out


def mask_vector(state: SecAggPlusState, configs: ConfigRecord,
                vector: list[np.ndarray]) -> list[np.ndarray]:
    """Flower's collect stage on an integer vector: decrypt and keep the neighbours' shares,
    add the private mask and the pairwise masks, reduce modulo ``mod_range`` (the body of
    ``secaggplus_mod._collect_masked_vectors`` after its quantisation step)."""
    ciphertexts, srcs = list(configs[Key.CIPHERTEXT_LIST]), list(configs[Key.SOURCE_LIST])
    if len(ciphertexts) + 1 < state.threshold:
        raise ValueError("Not enough available neighbour clients.")
    available: list[int] = []
    for src, ciphertext in zip(srcs, ciphertexts, strict=True):
        plaintext = decrypt(state.ss2_dict[src], ciphertext)
        actual_src, dst, rd_seed_share, sk1_share = share_keys_plaintext_separate(plaintext)
        if src != actual_src or dst != state.nid:
            raise ValueError(f"Node {state.nid}: share from {actual_src} to {dst} arrived as "
                             f"from {src}")
        available.append(src)
        state.rd_seed_share_dict[src] = rd_seed_share
        state.sk1_share_dict[src] = sk1_share
    dims = [a.shape for a in vector]
    out = parameters_addition(vector, pseudo_rand_gen(state.rd_seed, state.mod_range, dims))
    for nid in available:
        shared = generate_shared_key(bytes_to_private_key(state.sk1),
                                     bytes_to_public_key(state.public_keys_dict[nid][0]))
        pairwise = pseudo_rand_gen(shared, state.mod_range, dims)
        out = (parameters_addition(out, pairwise) if state.nid > nid
               else parameters_subtraction(out, pairwise))
    return parameters_mod(out, state.mod_range)


def _client_params(state: SecAggPlusState, configs: ConfigRecord) -> SecAggParams:
    """The client's SecAgg+ parameters: the server's setup (in ``state``) and collect stage."""
    return SecAggParams(clipping_range=state.clipping_range,
                        quantization_range=state.target_range, modulus_range=state.mod_range,
                        max_weight=state.max_weight, max_count=float(configs[MAX_COUNT_KEY]))


def _masked_record(state: SecAggPlusState, configs: ConfigRecord,
                   encoded: Mapping[str, np.ndarray]) -> ArrayRecord:
    """The ArrayRecord ``secagg-masked`` of an encoded vector (:func:`mask_vector` on it)."""
    masked = mask_vector(state, configs, list(encoded.values()))
    # Residues mod 2**32 fit in 4 bytes: the upload is then as large as a float32 one.
    dtype = np.uint32 if state.mod_range <= 2 ** 32 else np.int64
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=dtype))
                        for k, v in zip(encoded, masked)})


def _masked_reply(state: SecAggPlusState, configs: ConfigRecord, reply: RecordDict,
                  msg: Message, ctxt: Context) -> RecordDict:
    """The reply of stage 3: the ClientApp's reply with ``"arrays"`` (and the summed extras)
    replaced by the masked vector ``secagg-masked``; metrics and other extras unchanged.

    An evaluate reply (``secagg-eval``) instead sends its metrics (all but ``num-examples``)
    as one masked array, every user with the same weight (their mean is what the server
    needs), their names in the ConfigRecord ``secagg-metric-names``, and no metric in the
    clear."""
    if msg.metadata.message_type == MessageType.EVALUATE:
        return _masked_eval_reply(state, configs, reply, msg, ctxt)
    arrays = arrays_to_dict(reply[ARRAYS])
    extras = arrays_to_dict(reply[EXTRAS]) if EXTRAS in reply.array_records else {}
    aggregation = str(configs[AGGREGATION_KEY])
    sum_keys = [str(k) for k in configs[SUMS_KEY]] if SUMS_KEY in configs else []
    missing = [k for k in sum_keys if k not in extras]
    if missing:
        raise ValueError(f"secure aggregation: the reply lacks extras {missing} to sum")
    params = _client_params(state, configs)
    seed = _rounding_seed(state, msg, ctxt)
    encoded = encode_update(arrays, float(reply[METRICS][NUM_EXAMPLES]), params,
                            aggregation=aggregation, item_key=str(configs[ITEM_KEY]),
                            item_counts=extras.get(ITEM_COUNTS),
                            sums={k: extras[k] for k in sum_keys}, seed=seed)
    out = RecordDict({METRICS: reply[METRICS], SECAGG_MASKED: _masked_record(state, configs, encoded)})
    clear = {k: v for k, v in extras.items()
             if k not in sum_keys and not (aggregation == "itemwise" and k == ITEM_COUNTS)}
    if clear:
        out[EXTRAS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in clear.items()})
    return out


def _rounding_seed(state: SecAggPlusState, msg: Message, ctxt: Context) -> tuple[int, ...]:
    """Rounding drawn per (run seed, round, user[, 1 for evaluation]): the same on every
    engine and deployment (a node id is not: Flower's simulation draws them at random)."""
    server_round = int(msg.content["config"].get(SERVER_ROUND, 0)) if "config" in msg.content else 0
    user = int(ctxt.node_config.get("partition-id", state.nid))
    seed = (int(ctxt.run_config.get("seed", 0)), server_round, user)
    return seed + (1,) if msg.metadata.message_type == MessageType.EVALUATE else seed


def _masked_eval_reply(state: SecAggPlusState, configs: ConfigRecord, reply: RecordDict,
                       msg: Message, ctxt: Context) -> RecordDict:
    """Stage 3 of a secure evaluation (see :func:`_masked_reply`)."""
    metrics = dict(reply[METRICS])
    names = sorted(k for k in metrics if k != NUM_EXAMPLES)
    params = _client_params(state, configs)
    encoded = encode_update({EVAL_METRICS: np.array([float(metrics[k]) for k in names])}, 1.0,
                            params, aggregation="mean", seed=_rounding_seed(state, msg, ctxt))
    return RecordDict({SECAGG_MASKED: _masked_record(state, configs, encoded),
                       METRIC_NAMES: ConfigRecord({"names": names})})


def secagg_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod of fedmm's SecAgg+: train messages with a ``secaggplus_configs`` record run
    the stage it names (setup, share keys and unmask with Flower's own stage handlers; the
    collect stage trains through ``call_next`` and masks the reply); every other message goes
    to ``call_next`` unchanged. The protocol state lives in ``ctxt.state`` as in Flower's mod."""
    if (msg.metadata.message_type not in (MessageType.TRAIN, MessageType.EVALUATE)
            or RECORD_KEY_CONFIGS not in msg.content.config_records):
        return call_next(msg, ctxt)
    if RECORD_KEY_STATE not in ctxt.state.config_records:
        ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord({})
    state = SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])
    configs = ConfigRecord(dict(msg.content.config_records[RECORD_KEY_CONFIGS]))  # a copy
    check_stage(state.current_stage, configs)
    state.current_stage = str(configs.pop(Key.STAGE))
    check_configs(state.current_stage, configs)
    out = RecordDict()
    if state.current_stage == Stage.SETUP:
        state.nid = msg.metadata.dst_node_id
        res = _setup(state, configs)
    elif state.current_stage == Stage.SHARE_KEYS:
        res = _share_keys(state, configs)
    elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        out = _masked_reply(state, configs, reply.content, msg, ctxt)
        res = {}
    else:
        res = _unmask(state, configs)
    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    out.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(res, False)
    return Message(out, reply_to=msg)


# ----- server side -------------------------------------------------------------------------
def content_bytes(content: RecordDict) -> int:
    """Bytes of a message content as :func:`fedmm.protocol.record_bytes` counts them, with
    empty lists in ConfigRecords allowed (Flower's ``count_bytes`` fails on them)."""
    def value(v: Any) -> int:
        if isinstance(v, list):
            return sum(value(x) for x in v)
        return len(v) if isinstance(v, (bytes, str)) else 8
    total = 0
    for rec in content.values():
        if isinstance(rec, ConfigRecord):
            total += sum(len(k) + value(v) for k, v in rec.items())
        else:
            total += rec.count_bytes()
    return int(total)


class SecAggError(RuntimeError):
    """A SecAgg+ round cannot finish (too few clients or shares left)."""


class SecAggPlusRound:
    """One training round's SecAgg+ exchange on the server (used by
    :class:`strategies.base.FedRecStrategy`).

    :meth:`prepare` runs stages 1–2 and returns the train messages (stage 3) for the clients
    that shared their keys; the strategy sends them; :meth:`unmask` runs stage 4 on the masked
    replies and returns the integer sums; :meth:`decode` turns them into averages.
    """

    def __init__(self, params: SecAggParams, grid: Any, server_round: int, *, seed: int = 0,
                 timeout: float | None = None, min_replies: int = 2, tag: str = "") -> None:
        self.params = params
        self.grid = grid
        self.server_round = int(server_round)
        self.timeout = timeout
        self.min_replies = max(2, int(min_replies))
        self.rng = random.Random(f"secagg{tag}:{seed}:{server_round}")
        self.sampled: list[int] = []
        self.neighbours: dict[int, set[int]] = {}
        self.public_keys: dict[int, list[bytes]] = {}
        self.shared: set[int] = set()
        self.active: list[int] = []
        self.threshold = 0
        self.num_shares = 0
        self.seconds = 0.0
        self.bytes = 0            # bytes of the stage 1, 2 and 4 messages (both directions)
        self.dropped: dict[str, list[int]] = {}   # stage -> node ids that failed it

    # -- helpers --
    def _send(self, stage: str, contents: dict[int, RecordDict]) -> dict[int, Message]:
        """Send one stage's messages; returns the successful replies by node (failures are
        logged and listed in :attr:`dropped`)."""
        t = time.perf_counter()
        messages = [Message(content=c, dst_node_id=n, message_type=MessageType.TRAIN,
                            group_id=str(self.server_round)) for n, c in contents.items()]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        ok = {}
        for m in replies:
            src = m.metadata.src_node_id
            if m.has_error() or RECORD_KEY_CONFIGS not in m.content.config_records:
                why = m.error.reason if m.has_error() else "no secaggplus_configs record (the " \
                    "ClientApp does not run fedmm.secagg.secagg_mod?)"
                log(WARNING, "secagg round %d, stage %s: node %d failed: %s",
                    self.server_round, stage, src, why[:300])
                continue
            ok[src] = m
            self.bytes += content_bytes(m.content)
        self.bytes += sum(content_bytes(c) for c in contents.values())
        self.dropped[stage] = sorted(set(contents) - set(ok))
        self.seconds += time.perf_counter() - t
        return ok

    def _need(self, alive: set[int], stage: str) -> None:
        if len(alive) < max(self.min_replies, self.threshold):
            raise SecAggError(f"secure aggregation, round {self.server_round}: {len(alive)} "
                              f"clients left after stage '{stage}', need at least "
                              f"{max(self.min_replies, self.threshold)} (max of min-train-replies, "
                              f"2 and the reconstruction threshold {self.threshold})")
        for nid in alive:
            if len(self.neighbours[nid] & alive) < self.threshold:
                raise SecAggError(f"secure aggregation, round {self.server_round}: node {nid} has "
                                  f"fewer than threshold = {self.threshold} neighbours left after "
                                  f"stage '{stage}'; raise secagg-num-shares or lower "
                                  f"secagg-threshold")

    # -- stages 1-3 --
    def prepare(self, messages: Sequence[Message], *, aggregation: str, item_key: str,
                sum_extras: Sequence[str] = (),
                message_type: str = MessageType.TRAIN) -> list[Message]:
        """Stages 1 (setup) and 2 (share keys) with the destinations of ``messages`` (the
        round's train messages, or its evaluate messages with ``message_type`` EVALUATE);
        returns those messages, for the clients that completed both, with the stage-3 record
        (forwarded shares and what to sum) added.

        Raises
        ------
        SecAggError
            Fewer than 2 sampled clients, or too few left after a stage.
        """
        by_node = {m.metadata.dst_node_id: m for m in messages}
        self.sampled = sorted(by_node)
        k = len(self.sampled)
        if k < 2:
            raise SecAggError(f"secure aggregation needs at least 2 sampled clients per round, "
                              f"got {k} (raise fraction-train)")
        p = self.params
        if 2 * k * p.quantization_range >= p.modulus_range:
            # The sums are read centred (values above modulus / 2 are negative): they must
            # stay below half the modulus.
            raise SecAggError(f"{k} clients x secagg-quantization-range {p.quantization_range} "
                              f"reaches half of secagg-modulus-range {p.modulus_range}: the sum "
                              f"would wrap; lower the quantization range or raise the modulus")
        self.num_shares, self.threshold = p.round_sizes(k)
        order = list(self.sampled)
        self.rng.shuffle(order)
        half = self.num_shares >> 1
        self.neighbours = {nid: {order[(i + o) % k] for o in range(-half, half + 1)}
                           for i, nid in enumerate(order)}
        setup = ConfigRecord({Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: k,
                              Key.SHARE_NUMBER: self.num_shares, Key.THRESHOLD: self.threshold,
                              Key.CLIPPING_RANGE: float(p.clipping_range),
                              Key.TARGET_RANGE: int(p.quantization_range),
                              Key.MOD_RANGE: int(p.modulus_range),
                              Key.MAX_WEIGHT: float(p.max_weight)})
        ok = self._send(Stage.SETUP, {n: RecordDict({RECORD_KEY_CONFIGS: setup}) for n in self.sampled})
        for nid, m in ok.items():
            cfg = m.content.config_records[RECORD_KEY_CONFIGS]
            self.public_keys[nid] = [cfg[Key.PUBLIC_KEY_1], cfg[Key.PUBLIC_KEY_2]]
        keyed = set(self.public_keys)
        self._need(keyed, Stage.SETUP)

        def share_keys(nid: int) -> RecordDict:
            rec = ConfigRecord({str(n): self.public_keys[n] for n in self.neighbours[nid] & keyed})
            rec[Key.STAGE] = Stage.SHARE_KEYS
            return RecordDict({RECORD_KEY_CONFIGS: rec})

        ok = self._send(Stage.SHARE_KEYS, {n: share_keys(n) for n in sorted(keyed)})
        self.shared = set(ok)
        self._need(self.shared, Stage.SHARE_KEYS)
        fwd: dict[int, tuple[list[int], list[bytes]]] = {n: ([], []) for n in self.shared}
        for src in sorted(ok):
            cfg = ok[src].content.config_records[RECORD_KEY_CONFIGS]
            for dst, ct in zip(cfg[Key.DESTINATION_LIST], cfg[Key.CIPHERTEXT_LIST], strict=True):
                if dst in fwd:
                    fwd[dst][0].append(src)
                    fwd[dst][1].append(ct)
        out = []
        for nid in sorted(self.shared):
            srcs, cts = fwd[nid]
            rec = ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.SOURCE_LIST: srcs,
                                Key.CIPHERTEXT_LIST: cts, AGGREGATION_KEY: aggregation,
                                ITEM_KEY: item_key, MAX_COUNT_KEY: float(self.params.max_count)})
            if sum_extras:
                rec[SUMS_KEY] = [str(s) for s in sum_extras]
            self.bytes += content_bytes(RecordDict({RECORD_KEY_CONFIGS: rec}))
            src = by_node[nid]
            content = RecordDict({**dict(src.content.items()), RECORD_KEY_CONFIGS: rec})
            out.append(Message(content=content, dst_node_id=nid, message_type=message_type,
                               group_id=str(self.server_round)))
        return out

    # -- stage 4 --
    def unmask(self, masked: Mapping[int, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Stage 4 on the masked vectors of the clients that answered stage 3 (node ->
        ``secagg-masked`` entries); returns the sums, int64, entry by entry (centred: values
        above ``modulus_range / 2`` are negative).

        Raises
        ------
        SecAggError
            Too few clients or shares left; masked vectors that disagree in entries or shapes.
        """
        t = time.perf_counter()
        active = set(masked) & self.shared
        self._need(active, Stage.COLLECT_MASKED_VECTORS)
        dead = self.shared - active
        names = list(next(iter(masked.values())))
        for nid, vec in masked.items():
            if list(vec) != names or any(np.shape(vec[k]) != np.shape(masked[min(masked)][k])
                                         for k in names):
                raise SecAggError(f"secure aggregation: node {nid}'s masked vector has entries "
                                  f"{list(vec)} / shapes unlike the others'")
        M = int(self.params.modulus_range)
        total: list[np.ndarray] | None = None
        for nid in sorted(active):
            vec = [np.asarray(masked[nid][k], dtype=np.int64) for k in names]
            total = vec if total is None else parameters_mod(parameters_addition(total, vec), M)
        assert total is not None
        self.seconds += time.perf_counter() - t

        def unmask_msg(nid: int) -> RecordDict:
            rec = ConfigRecord({Key.STAGE: Stage.UNMASK,
                                Key.ACTIVE_NODE_ID_LIST: sorted(self.neighbours[nid] & active),
                                Key.DEAD_NODE_ID_LIST: sorted(self.neighbours[nid] & dead)})
            return RecordDict({RECORD_KEY_CONFIGS: rec})

        ok = self._send(Stage.UNMASK, {n: unmask_msg(n) for n in sorted(active)})
        t = time.perf_counter()
        shares: dict[int, list[bytes]] = {n: [] for n in active | dead}
        for m in ok.values():
            cfg = m.content.config_records[RECORD_KEY_CONFIGS]
            for owner, share in zip(cfg[Key.NODE_ID_LIST], cfg[Key.SHARE_LIST], strict=True):
                if owner in shares:
                    shares[owner].append(share)
        dims = [a.shape for a in total]
        for nid in sorted(shares):
            if len(shares[nid]) < self.threshold:
                raise SecAggError(f"secure aggregation, round {self.server_round}: {len(shares[nid])} "
                                  f"shares of node {nid}'s {'mask seed' if nid in active else 'key'} "
                                  f"came back, fewer than threshold = {self.threshold}")
            secret = combine_shares(shares[nid])
            if nid in active:
                total = parameters_subtraction(total, pseudo_rand_gen(secret, M, dims))
            else:  # dropped after sharing keys: remove its pairwise masks with active neighbours
                for other in sorted(self.neighbours[nid] & active):
                    key = generate_shared_key(bytes_to_private_key(secret),
                                              bytes_to_public_key(self.public_keys[other][0]))
                    pairwise = pseudo_rand_gen(key, M, dims)
                    total = (parameters_addition(total, pairwise) if nid > other
                             else parameters_subtraction(total, pairwise))
        total = parameters_mod(total, M)
        self.active = sorted(active)
        self.seconds += time.perf_counter() - t
        return {k: np.where(v >= M // 2, v - M, v) for k, v in zip(names, total)}

    def decode(self, sums: Mapping[str, np.ndarray], previous: Mapping[str, np.ndarray],
               item_key: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(averaged arrays, summed extras)`` from :meth:`unmask`'s sums: every array's
        weighted sum (dequantised, offset removed) divided by the summed weight; under
        itemwise, the item table's rows by their summed item weights (rows nobody trained keep
        ``previous``)."""
        p = self.params
        target, n = int(p.quantization_range), len(self.active)
        total_w = float(sums[WEIGHT][0]) / target
        if total_w <= 0:
            raise SecAggError("secure aggregation: the summed weight is not positive")
        arrays: dict[str, np.ndarray] = {}
        for name, ref in previous.items():
            s = sums[ARRAY_PREFIX + name]
            # dequantize maps each client's value back with a shift of -clip; the sum of n
            # carries (n - 1) more (Flower's unmask_stage offset).
            weighted = dequantize([s], p.clipping_range, target)[0] - (n - 1) * p.clipping_range
            if ITEM_WEIGHTS in sums and name == item_key:
                w = sums[ITEM_WEIGHTS].astype(np.float64) / target
                seen = (w > 0).reshape((-1,) + (1,) * (weighted.ndim - 1))
                w = np.where(w > 0, w, 1.0).reshape(seen.shape)
                avg = np.where(seen, weighted / w, np.asarray(ref, np.float64))
            else:
                avg = weighted / total_w
            arrays[name] = avg.astype(ref.dtype)
        extras = {k[len(SUM_PREFIX):]: v.astype(np.int64) for k, v in sums.items()
                  if k.startswith(SUM_PREFIX)}
        return arrays, extras
