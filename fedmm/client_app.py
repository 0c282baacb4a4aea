"""Flower ClientApp (Message API): wraps the NumPyClient subclasses of ``clients/``.

The ``query`` handler answers which user this node holds (asked once before round 1, so the
strategy samples users, not node ids). The train/evaluate handlers build this node's client
(its user = ``node_config["partition-id"]``), restore its private parameters from
``context.state``, call the NumPyClient's ``fit``/``evaluate``, save the private parameters
back, and pack the reply as the strategy's message contract says (``"arrays"`` + ``"metrics"``
with ``num-examples`` [+ ``"extras"``]).
"""
from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmm.config import RunConfig
from fedmm.factory import build_client
from fedmm.protocol import (ARRAYS, CONFIG, EVAL_LOSS, EXTRAS, METRICS, NUM_EXAMPLES, PRIVATE_STATE,
                            USER, arrays_to_dict, dict_to_arrays)

app = ClientApp()


def _user(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise KeyError("node_config has no 'partition-id'; start SuperNodes with "
                       "--node-config \"partition-id=<user> num-partitions=<users>\"")
    return int(context.node_config["partition-id"])


def _setup(msg: Message, context: Context):
    cfg = RunConfig.from_mapping(context.run_config)
    client = build_client(cfg, _user(context))
    if PRIVATE_STATE in context.state.array_records:
        client.load_private_state(arrays_to_dict(context.state[PRIVATE_STATE]))
    arrays = msg.content[ARRAYS]
    names = list(arrays.keys())
    if names != client.shared_keys:
        raise ValueError(f"server sent arrays {names}, the '{cfg.backbone}' client shares "
                         f"{client.shared_keys}; server and clients must use the same backbone")
    params = [arrays[k].numpy() for k in names]
    config = dict(msg.content[CONFIG]) if CONFIG in msg.content.config_records else {}
    payload = {name: arrays_to_dict(rec)
               for name, rec in msg.content.array_records.items() if name != ARRAYS}
    client.receive(payload, config)
    return client, names, params, config


@app.train()
def train(msg: Message, context: Context) -> Message:
    client, names, params, config = _setup(msg, context)
    new_params, num_examples, metrics = client.fit(params, config)
    context.state[PRIVATE_STATE] = dict_to_arrays(client.private_state())
    # No user / partition id in the reply: the strategy knows it from the query round.
    content = RecordDict({
        ARRAYS: dict_to_arrays(dict(zip(names, new_params))),
        METRICS: MetricRecord({**metrics, NUM_EXAMPLES: int(num_examples)}),
    })
    extras = client.upload_extras()
    if extras:
        content[EXTRAS] = dict_to_arrays(extras)
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    client, _, params, config = _setup(msg, context)
    loss, num_examples, metrics = client.evaluate(params, config)
    return Message(content=RecordDict({METRICS: MetricRecord(
        {**metrics, EVAL_LOSS: float(loss), NUM_EXAMPLES: int(num_examples)})}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Which user this node holds (the strategy samples users by it); nothing else is read."""
    return Message(content=RecordDict({METRICS: MetricRecord({USER: _user(context)})}),
                   reply_to=msg)
