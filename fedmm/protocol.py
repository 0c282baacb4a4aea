"""fedmm's message contract in one place: record and key names, array converters, and the
typed train reply that every strategy parses once.

A ClientApp (fedmm's, or another project's) talks to the strategies of ``strategies/`` with
Flower ``Message``\\ s whose ``RecordDict`` holds these records:

=================  ==========================================================================
message            content
=================  ==========================================================================
query (optional)   ``"config"``: ``query = "user"``. Reply ``"metrics"``: ``user`` (int, the
                   node's user / partition id). Without it the strategy samples node ids.
train              ``"arrays"``: the shared parameters by name (the item table is named by the
                   strategy's ``item_table_key``, ``item_emb.weight`` by default);
                   ``"config"``: ``server-round``, ``aggregation`` (+ method keys below);
                   method payload records (GFMFR: ``"gfmfr"``; FedSLLM: ``"fedsllm"``).
train reply        ``"arrays"``: same keys and shapes; ``"metrics"``: ``num-examples`` (weight
                   of FedAvg), ``train-loss``; ``"extras"`` (ArrayRecord) for
                   ``aggregation = "itemwise"`` (``item-counts`` ``(N,)``) and method uploads.
evaluate           ``"arrays"``, ``"config"`` (``server-round``).
evaluate reply     ``"metrics"``: per-user ``{valid|test}_{full|sampled}_{hr|ndcg}@K`` (must
                   include the strategy's ``select_metric``), optionally ``num-examples``.
=================  ==========================================================================

Method keys. GFMFR train message: config ``gfmfr-lambda-t`` (this round's distillation weight
λ_t; not the run-config key ``gfmfr-lambda``, which is the base weight λ); record ``"gfmfr"``
with ``preference`` ``(N, 2)`` (server mode) or ``features`` ``(N, d)`` + ``scorer/<key>``
(client mode). GFMFR train reply: metric ``rec-loss`` (and ``dis-loss`` when distilled);
extras ``scorer/<key>`` (the private prediction-function parts, server mode). FedSLLM train
message: config ``fedsllm-sampler``, ``fedsllm-fraction``, ``fedsllm-eps`` (and
``fedsllm-score`` and ``fedsllm-pool`` for the prototype samplers); record
``"fedsllm"`` with ``prototypes`` ``(P, d)`` and ``similarity`` ``(N, P)``. FedSLLM train
reply: extras ``prototype-counts`` ``(P,)`` int64.

Secure aggregation (``secagg = true``, :mod:`fedmm.secagg`): each training round first sends two
train messages per sampled node with only a ConfigRecord ``"secaggplus_configs"`` (Flower's
SecAgg+ setup and share-keys stages), then the train message above plus that record (forwarded
key shares), then one more (unmask). The train reply then carries ``"secagg-masked"``
(:data:`SECAGG_MASKED`) instead of ``"arrays"``, and ``"extras"`` without the securely summed
entries (``item-counts``, FedSLLM's ``prototype-counts``); ``"metrics"`` as above.

The user of a train reply is NOT read from the reply: the strategy knows it from the query
round (node id -> user), so train replies carry no partition id.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict

from strategies.aggregation import ReplyError  # noqa: F401  (the contract's error, re-exported)

# ----- record names -----------------------------------------------------------------------
ARRAYS, CONFIG, METRICS, EXTRAS = "arrays", "config", "metrics", "extras"

# ----- config keys (server -> client) --------------------------------------------------------
SERVER_ROUND, AGGREGATION, QUERY = "server-round", "aggregation", "query"

# ----- metric keys (client -> server) --------------------------------------------------------
NUM_EXAMPLES, TRAIN_LOSS, EVAL_LOSS, USER = "num-examples", "train-loss", "eval-loss", "user"
#: Prefix of the train-reply metrics of a client's freshly trained model (``train-eval``):
#: ``fresh-valid_sampled_hr@10`` etc.; the strategy averages them into the round record.
FRESH_PREFIX = "fresh-"

# ----- arrays --------------------------------------------------------------------------------
#: Default name of the shared item table (the strategies take it as an argument).
ITEM_TABLE_KEY = "item_emb.weight"
#: Extras key of item-wise aggregation's per-item training counts ``(N,)``.
ITEM_COUNTS = "item-counts"
#: Train-reply ArrayRecord of secure aggregation (``secagg = true``): the masked, quantised,
#: weighted update that replaces ``"arrays"`` (:mod:`fedmm.secagg`; int64 entries ``weight``,
#: ``item-weights``, ``sum/<extras key>``, ``array/<name>``).
SECAGG_MASKED = "secagg-masked"
#: Key of a user's private parameters in the ClientApp's ``context.state`` (never sent).
PRIVATE_STATE = "fedmm.private"

# ----- GFMFR ---------------------------------------------------------------------------------
GFMFR_PAYLOAD = "gfmfr"
#: Server mode: the group preference ``E_M_l``, float32 ``(N, 2)`` = ``[1 - p, p]`` per item.
PREFERENCE = "preference"
#: Client mode: the group's fused item features ``Q_l``, float16 ``(N, d)``.
FEATURES = "features"
#: Prefix of prediction-function arrays (uploaded ``P_u`` in ``"extras"``; group-averaged
#: shared scorer parts in the client-mode payload).
SCORER_PREFIX = "scorer/"
#: Train-config key of this round's distillation weight λ_t.
ROUND_LAMBDA = "gfmfr-lambda-t"
#: Train-config key: the items GFMFR's KL runs over, ``"batch"`` or ``"all"`` (GFMFRConfig.kl_items).
KL_ITEMS = "gfmfr-kl-items"
REC_LOSS, DIS_LOSS = "rec-loss", "dis-loss"

# ----- FedSLLM -------------------------------------------------------------------------------
FEDSLLM_PAYLOAD = "fedsllm"
PROTOTYPES, SIMILARITY, PROTOTYPE_COUNTS = "prototypes", "similarity", "prototype-counts"
SAMPLER_CFG, FRACTION_CFG, EPS_CFG = "fedsllm-sampler", "fedsllm-fraction", "fedsllm-eps"
#: Train-config key of the prototype score form (``fedsllm`` and ``cluster`` samplers only).
SCORE_CFG = "fedsllm-score"
#: Train-config key of the prototype samplers' selection pool (``"unseen"`` or ``"all"``;
#: absent = ``"all"``).
POOL_CFG = "fedsllm-pool"


def record_bytes(content: RecordDict) -> int:
    """Bytes of all records of a message content, as Flower counts them."""
    return int(sum(rec.count_bytes() for rec in content.values()))


def array_view(arr: Array) -> np.ndarray:
    """A read-only NumPy view of an ``Array``'s bytes: the values of ``arr.numpy()`` without
    copying them (``Array.numpy`` loads the ``.npy`` bytes into a new array).

    The view keeps ``arr.data`` alive and cannot be written to. Anything but a plain ``.npy``
    payload of version 1 or 2 without Python objects goes through ``arr.numpy()`` (so a
    non-NumPy ``stype`` raises Flower's ``TypeError``, and object arrays are refused as there).
    """
    data = arr.data
    if arr.stype != "numpy.ndarray" or not isinstance(data, bytes):
        return arr.numpy()
    head = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            return arr.numpy()
    except ValueError:
        return arr.numpy()
    if dtype.hasobject:
        return arr.numpy()
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=head.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def arrays_to_dict(record: ArrayRecord, copy: bool = True) -> dict[str, np.ndarray]:
    """ArrayRecord -> ``{name: numpy array}``: new arrays, or with ``copy=False`` read-only
    views of the record's bytes (:func:`array_view`; the record must then outlive them)."""
    if copy:
        return {k: v.numpy() for k, v in record.items()}
    return {k: array_view(v) for k, v in record.items()}


def dict_to_arrays(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """``{name: numpy array}`` -> ArrayRecord (arrays made contiguous)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


@dataclass(frozen=True)
class TrainReply:
    """One successful train reply, parsed and checked once (in ``aggregate_train``).

    Attributes
    ----------
    node : int
        Source node id.
    user : int or None
        The node's user as the strategy learnt it in the query round (``None``: unknown).
    arrays : dict of str to numpy.ndarray
        The uploaded shared parameters (read-only views of the reply's bytes, as ``extras`` and
        ``masked``: :func:`array_view`).
    num_examples : float
        FedAvg weight (``num-examples``).
    metrics : dict of str to float
        Every scalar metric of the reply.
    extras : dict of str to numpy.ndarray
        The ``"extras"`` ArrayRecord (empty when absent).
    bytes_up : int
        Bytes of the reply's records.
    masked : dict of str to numpy.ndarray
        Secure aggregation only: the ``secagg-masked`` record (``arrays`` is then empty).
    """

    node: int
    user: int | None
    arrays: dict[str, np.ndarray]
    num_examples: float
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    bytes_up: int = 0
    masked: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def parse(cls, msg: Message, user: int | None = None, secagg: bool = False) -> "TrainReply":
        """Parse a successful train reply (``secagg``: a masked one, ``"secagg-masked"`` in
        place of ``"arrays"``).

        Raises
        ------
        ReplyError
            The reply lacks ``"arrays"``/``"metrics"`` or a scalar ``num-examples``.
        """
        src = msg.metadata.src_node_id
        content = msg.content
        shared = SECAGG_MASKED if secagg else ARRAYS
        if shared not in content.array_records or METRICS not in content.metric_records:
            raise ReplyError(f"reply from node {src}: needs records '{shared}' and '{METRICS}', "
                             f"got {list(content.keys())}")
        metrics = dict(content[METRICS])
        n = metrics.get(NUM_EXAMPLES)
        if not isinstance(n, (int, float)) or isinstance(n, bool):
            raise ReplyError(f"reply from node {src}: MetricRecord lacks a scalar '{NUM_EXAMPLES}'")
        # Read-only views of the reply's bytes, not copies: a round's replies are held together
        # until aggregated (604 copies of a 463 KiB table at ML-1M), so copies doubled that.
        extras = (arrays_to_dict(content[EXTRAS], copy=False)
                  if EXTRAS in content.array_records else {})
        return cls(node=src, user=user,
                   arrays={} if secagg else arrays_to_dict(content[ARRAYS], copy=False),
                   masked=arrays_to_dict(content[SECAGG_MASKED], copy=False) if secagg else {},
                   num_examples=float(n),
                   metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
                   extras=extras, bytes_up=record_bytes(content))

    def scalar(self, key: str, what: str) -> float:
        """A required scalar metric.

        Raises
        ------
        ReplyError
            Naming the node, the key and ``what`` needs it.
        """
        if key not in self.metrics:
            raise ReplyError(f"reply from node {self.node}: {what} needs the metric '{key}'")
        return self.metrics[key]

    def extra(self, key: str, what: str) -> np.ndarray:
        """A required array of the ``"extras"`` record.

        Raises
        ------
        ReplyError
            Naming the node, the key and ``what`` needs it.
        """
        if key not in self.extras:
            raise ReplyError(f"reply from node {self.node}: {what} needs ArrayRecord '{EXTRAS}' "
                             f"with '{key}'; got {sorted(self.extras)}")
        return self.extras[key]
