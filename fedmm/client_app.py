"""Flower ClientApp (Message API): wraps the NumPyClient subclasses of ``clients/``.

The ``query`` handler answers which user this node holds (asked once before round 1, so the
strategy samples users, not node ids). The train/evaluate handlers build this node's client
(its user = ``node_config["partition-id"]``), restore its private parameters from
``context.state``, call the NumPyClient's ``fit``/``evaluate``, save the private parameters
back, and pack the reply as the strategy's message contract says (``"arrays"`` + ``"metrics"``
with ``num-examples`` [+ ``"extras"``]).

With ``client-state-dir`` set, the private parameters also go to disk after every training
round (:class:`fedmm.checkpoint.ClientStateStore`, atomic writes), because a node's
``context.state`` does not outlive its run: a run resumed from the server checkpoint of round
``k`` (``resume-round = k``) loads, at each node's first message, the state its user held
after round ``k``; a fresh run (``resume-round = 0``) removes what an earlier run of the same
directory left for this user.
"""
from __future__ import annotations

import functools

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmm.checkpoint import ClientStateStore
from fedmm.config import RunConfig
from fedmm.factory import build_client
from fedmm.secagg import secagg_mod
from fedmm.protocol import (ARRAYS, CONFIG, EVAL_LOSS, EXTRAS, METRICS, NUM_EXAMPLES, PRIVATE_STATE,
                            SERVER_ROUND, USER, arrays_to_dict, dict_to_arrays)

app = ClientApp()

#: ``context.state`` ConfigRecord: ``{"round": r}``, the round the private state in
#: ``context.state`` was trained in (-1: none yet); its presence means the node's first message
#: of this run was handled (:func:`_first_message`).
STATE_ROUND = "fedmm.private-round"


def _user(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise KeyError("node_config has no 'partition-id'; start SuperNodes with "
                       "--node-config \"partition-id=<user> num-partitions=<users>\"")
    return int(context.node_config["partition-id"])


@functools.lru_cache(maxsize=8)
def _parse_config(items: tuple) -> RunConfig:
    return RunConfig.from_mapping(dict(items))


def _config(context: Context) -> RunConfig:
    """The node's typed run config, parsed once per distinct run config in this process (every
    message carries the same one; parsing it took ~0.6 ms per message, measured)."""
    return _parse_config(tuple(sorted(context.run_config.items())))


def _store(cfg: RunConfig, user: int) -> ClientStateStore | None:
    return (ClientStateStore(cfg.client_state_dir, user, cfg.checkpoint_every)
            if cfg.client_state_dir else None)


def _first_message(cfg: RunConfig, context: Context) -> None:
    """On the node's first message of this run: with ``client-state-dir``, a resumed run
    (``resume-round = k``) puts the user's saved state of round ``<= k`` into
    ``context.state``; a fresh run clears the user's files. Later messages: nothing."""
    if STATE_ROUND in context.state.config_records:
        return
    trained_in = -1
    store = _store(cfg, _user(context))
    if store is not None and cfg.resume_round:
        found = store.load(cfg.resume_round)
        if found is not None:
            trained_in, arrays = found
            context.state[PRIVATE_STATE] = dict_to_arrays(arrays)
    elif store is not None:
        store.clear()
    context.state[STATE_ROUND] = ConfigRecord({"round": trained_in})


def _setup(msg: Message, context: Context):
    cfg = _config(context)
    _first_message(cfg, context)
    client = build_client(cfg, _user(context))
    previous = (arrays_to_dict(context.state[PRIVATE_STATE])
                if PRIVATE_STATE in context.state.array_records else None)
    if previous is not None:   # copied into the model: the arrays stay as they were
        client.load_private_state(previous)
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
    return client, names, params, config, cfg, previous


def _save_private(cfg: RunConfig, context: Context, private: dict, config: dict,
                  previous: dict | None) -> None:
    """Keep the trained private state in ``context.state`` and, with ``client-state-dir``,
    on disk (tagged with the server round); ``previous`` is the state the node held before this
    round (as :func:`_setup` read it from ``context.state``)."""
    store = _store(cfg, _user(context))
    if store is not None:
        if SERVER_ROUND not in config:
            raise ValueError(f"client-state-dir is set but the train config has no "
                             f"'{SERVER_ROUND}': saved states could not be matched to checkpoints")
        before = int(context.state[STATE_ROUND]["round"])
        store.save(int(config[SERVER_ROUND]), private, before, previous)
    context.state[PRIVATE_STATE] = dict_to_arrays(private)
    context.state[STATE_ROUND] = ConfigRecord({"round": int(config.get(SERVER_ROUND, 0))})


@app.train(mods=[secagg_mod])   # passes everything but SecAgg+ messages through unchanged
def train(msg: Message, context: Context) -> Message:
    client, names, params, config, cfg, previous = _setup(msg, context)
    new_params, num_examples, metrics = client.fit(params, config)
    _save_private(cfg, context, client.private_state(), config, previous)
    # No user / partition id in the reply: the strategy knows it from the query round.
    content = RecordDict({
        ARRAYS: dict_to_arrays(dict(zip(names, new_params))),
        METRICS: MetricRecord({**metrics, NUM_EXAMPLES: int(num_examples)}),
    })
    extras = client.upload_extras()
    if extras:
        content[EXTRAS] = dict_to_arrays(extras)
    return Message(content=content, reply_to=msg)


@app.evaluate(mods=[secagg_mod])   # secagg-eval: masks the metrics; else passes through
def evaluate(msg: Message, context: Context) -> Message:
    client, _, params, config, _, _ = _setup(msg, context)
    loss, num_examples, metrics = client.evaluate(params, config)
    return Message(content=RecordDict({METRICS: MetricRecord(
        {**metrics, EVAL_LOSS: float(loss), NUM_EXAMPLES: int(num_examples)})}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Which user this node holds (the strategy samples users by it); nothing else is read
    (but a node's first message restores or clears its saved state, see :func:`_first_message`)."""
    _first_message(_config(context), context)
    return Message(content=RecordDict({METRICS: MetricRecord({USER: _user(context)})}),
                   reply_to=msg)
