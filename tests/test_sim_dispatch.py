"""fedmm.sim_dispatch: the indexed ``get_message_ins`` returns what Flower's own scan returns.

Two in-memory LinkStates get the same messages (several per node, in an interleaved order,
one expired, some for another run); one keeps Flower's ``get_message_ins``, the other is
indexed. Sweeping the nodes as the simulation engine does (``limit=1``, repeatedly) must hand
out the same messages in the same order, mark them delivered the same way and drop the expired
one; deletions must leave the index consistent.
"""
from __future__ import annotations

import random

import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402
from flwr.server.superlink.linkstate.in_memory_linkstate import (InMemoryLinkState,  # noqa: E402
                                                                 RunRecord)
from flwr.supercore.constant import NOOP_FEDERATION_ID  # noqa: E402
from flwr.supercore.object_store import ObjectStoreFactory  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.superlink.federation import NoOpFederationManager  # noqa: E402

from fedmm.sim_dispatch import NodeIndexedStore, index_dispatch, index_grid_dispatch  # noqa: E402

pytestmark = pytest.mark.usefixtures("serverapp_identity")

RUNS = (11, 12)
NODES = (101, 102, 103, 104, 105)


def _message(run_id: int, node: int, i: int, ttl: float = 3600.0) -> Message:
    msg = Message(content=RecordDict({"c": ConfigRecord({"i": i})}), dst_node_id=node,
                  message_type="query", ttl=ttl)
    msg.metadata.__dict__["_run_id"] = run_id
    msg.metadata.__dict__["_src_node_id"] = 0
    msg.metadata.__dict__["_message_id"] = f"m{run_id}-{node}-{i}"
    return msg


def _state(messages: list[Message]) -> InMemoryLinkState:
    state = InMemoryLinkState(NoOpFederationManager(), ObjectStoreFactory().store())
    for run_id in RUNS:
        run = Run.create_empty(run_id=run_id)
        run.federation_id = NOOP_FEDERATION_ID
        state.run_ids[run_id] = RunRecord(run=run)
    for msg in messages:   # as store_message_ins does, after its validation
        state.message_ins_store[msg.metadata.message_id] = msg
    return state


def _messages() -> list[Message]:
    rng = random.Random(0)
    msgs = [_message(rng.choice(RUNS), node, i) for i in range(4) for node in NODES]
    msgs.append(_message(RUNS[0], NODES[2], 99, ttl=1e-9))     # expired on arrival
    rng.shuffle(msgs)
    return msgs


def _ids(msgs: list[Message]) -> list[str]:
    return [m.metadata.message_id for m in msgs]


def test_indexed_sweeps_hand_out_the_same_messages_as_flowers_scan():
    plain, indexed = _state(_messages()), _state(_messages())
    assert index_dispatch(indexed) and isinstance(indexed.message_ins_store, NodeIndexedStore)
    assert not isinstance(plain.message_ins_store, NodeIndexedStore)
    for sweep in range(6):
        for node in NODES:
            for run_id in (None, RUNS[1]):
                a = plain.get_message_ins(node_id=node, limit=1, run_id=run_id)
                b = indexed.get_message_ins(node_id=node, limit=1, run_id=run_id)
                assert _ids(a) == _ids(b), (sweep, node, run_id)
                assert [m.metadata.delivered_at != "" for m in b] == [True] * len(b)
    # everything handed out, the expired message dropped by both
    assert set(plain.message_ins_store) == set(indexed.message_ins_store)
    assert all(m.metadata.delivered_at for m in indexed.message_ins_store.values())
    assert "m11-103-99" not in indexed.message_ins_store
    assert not indexed.message_ins_store.by_node   # the index holds undelivered messages only
    # no limit: all of a node's undelivered messages, in order
    plain2, indexed2 = _state(_messages()), _state(_messages())
    index_dispatch(indexed2)
    for node in NODES:
        assert _ids(plain2.get_message_ins(node_id=node, limit=None)) == \
            _ids(indexed2.get_message_ins(node_id=node, limit=None))


def test_the_index_follows_deletions_and_new_messages():
    state = _state(_messages())
    index_dispatch(state)
    store = state.message_ins_store
    victims = {k for k in store if k.endswith("-1")}
    state.delete_messages(victims)
    assert not victims & set(store)
    assert {k for ids in store.by_node.values() for k in ids} == set(store)   # none delivered
    store["new"] = _message(RUNS[0], 999, 0)
    assert _ids(state.get_message_ins(node_id=999, limit=1)) == ["m11-999-0"]
    with pytest.raises(AssertionError):
        state.get_message_ins(node_id=999, limit=0)


def test_other_states_and_grids_are_left_alone():
    assert index_dispatch(object()) is False
    assert index_grid_dispatch(object()) is False
    state = _state([])
    assert index_dispatch(state) and index_dispatch(state)    # twice: still one index
    assert isinstance(state.message_ins_store, NodeIndexedStore)
