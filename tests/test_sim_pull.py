"""fedmm.sim_dispatch: the indexed grid's ``pull_messages`` returns Flower's replies.

Two identical in-memory worlds (a LinkState with a run and registered nodes, an
``InMemoryGrid`` over it) get the same messages, and the same ones are answered; one grid keeps
Flower's ``pull_messages``, the other is indexed (:func:`index_grid_dispatch`). A poll must
return the same replies; the indexed one leaves an expired message's error reply to its next
full poll, which then returns what Flower returns.
"""
from __future__ import annotations

import secrets
import time
import uuid

import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402
from flwr.common.constant import (HEARTBEAT_INTERVAL_INF, NOOP_ACCOUNT_NAME,  # noqa: E402
                                  NOOP_FLWR_AID, SUPERLINK_NODE_ID)
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState  # noqa: E402
from flwr.supercore.constant import NOOP_FEDERATION_ID  # noqa: E402
from flwr.supercore.object_store import ObjectStoreFactory  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.superlink.federation import NoOpFederationManager  # noqa: E402
from flwr.superlink.grid.inmemory_grid import InMemoryGrid  # noqa: E402

from fedmm import sim_dispatch  # noqa: E402
from fedmm.sim_dispatch import NodeIndexedStore, index_grid_dispatch  # noqa: E402

NODES = 5


def _world(monkeypatch, indexed: bool):
    """(grid, node ids, pushed message ids): NODES nodes, one message each; the last message
    lives 0.3 s."""
    state = InMemoryLinkState(NoOpFederationManager(), ObjectStoreFactory().store())
    run_id = state.create_run(None, None, None, {}, NOOP_FEDERATION_ID, None, NOOP_FLWR_AID,
                              "serverapp")
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_run_id", run_id)
    monkeypatch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)
    nodes = []
    for _ in range(NODES):   # as the simulation engine registers its nodes
        node = state.create_node(NOOP_FLWR_AID, NOOP_ACCOUNT_NAME, secrets.token_bytes(32),
                                 heartbeat_interval=HEARTBEAT_INTERVAL_INF)
        state.acknowledge_node_heartbeat(node_id=node, heartbeat_interval=HEARTBEAT_INTERVAL_INF)
        nodes.append(node)
    grid = InMemoryGrid.__new__(InMemoryGrid)   # what InMemoryGrid(factory) + set_run hold
    grid.state, grid.pull_interval = state, 0.1
    grid._run = state.get_run_info(run_ids=[run_id])[0]
    if indexed:
        assert index_grid_dispatch(grid)
        assert isinstance(state.message_ins_store, NodeIndexedStore)
    msgs = [Message(content=RecordDict({"c": ConfigRecord({"i": i})}), dst_node_id=n,
                    message_type="query", ttl=0.3 if i == NODES - 1 else 3600.0)
            for i, n in enumerate(nodes)]
    return grid, nodes, list(grid.push_messages(msgs))


def _answer(grid, node: int, i: int) -> None:
    """Node ``node`` takes its message and replies to it, as the engine's worker does."""
    (msg,) = grid.state.get_message_ins(node_id=node, limit=1)
    reply = Message(RecordDict({"r": ConfigRecord({"i": i})}), reply_to=msg)
    reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    assert grid.state.store_message_res(reply)


def _poll(grid, ids: list[str], outstanding: set[str]) -> list[tuple[int, bool]]:
    """One poll of ``send_and_receive``: pull the outstanding ids, drop those answered; returns
    (index of the message replied to, error?) of each reply, sorted."""
    replies = list(grid.pull_messages(set(outstanding)))
    outstanding.difference_update(m.metadata.reply_to_message_id for m in replies)
    return sorted((ids.index(m.metadata.reply_to_message_id), m.has_error()) for m in replies)


def test_a_poll_returns_the_stored_replies_and_a_full_poll_the_expired_message(monkeypatch):
    (g0, n0, ids0), (g1, n1, ids1) = _world(monkeypatch, False), _world(monkeypatch, True)
    out0, out1 = set(ids0), set(ids1)
    for i in (0, 2):
        _answer(g0, n0[i], i)
        _answer(g1, n1[i], i)
    assert _poll(g0, ids0, out0) == _poll(g1, ids1, out1) == [(0, False), (2, False)]
    assert _poll(g0, ids0, out0) == _poll(g1, ids1, out1) == []   # nothing new
    time.sleep(0.35)   # message 4 has expired
    _answer(g0, n0[1], 1)
    _answer(g1, n1[1], 1)
    assert _poll(g0, ids0, out0) == [(1, False), (4, True)]   # Flower: the reply + an error
    assert _poll(g1, ids1, out1) == [(1, False)]              # not yet a full poll
    g1._fedmm_full_pull_at = time.monotonic() - sim_dispatch.FULL_PULL_EVERY
    assert _poll(g1, ids1, out1) == [(4, True)]               # the full poll: the same error
    assert out0 == {ids0[3]} and out1 == {ids1[3]}
    # delivered messages leave the per-node index; the one not yet handed out stays
    store = g1.state.message_ins_store
    pending = {k for ids in store.by_node.values() for k in ids}
    assert pending == {k for k, m in store.items() if m.metadata.delivered_at == ""} == {ids1[3]}
    _answer(g0, n0[3], 3)
    _answer(g1, n1[3], 3)
    assert _poll(g0, ids0, out0) == _poll(g1, ids1, out1) == [(3, False)]
    assert not out0 and not out1 and not store.by_node


def test_indexing_a_grid_twice_patches_it_once(monkeypatch):
    grid, _, _ = _world(monkeypatch, True)
    patched = grid.pull_messages
    assert index_grid_dispatch(grid) and grid.pull_messages is patched
