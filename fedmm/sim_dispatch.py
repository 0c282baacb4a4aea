"""Indexed message dispatch for Flower 1.42's simulation engine (opt-out: ``sim-indexed-dispatch``).

The problem (measured in docs/benchmark.md): the simulation engine hands messages to its client
actors from an in-memory LinkState. Every 0.1 s its dispatcher thread sweeps all ``N`` nodes and
asks the state, for each one, for one undelivered message
(``vce_api.add_messages_to_queue`` → ``InMemoryLinkState.get_message_ins(node_id, limit=1)``).
That call scans *every* stored message (re-validating each) until it finds one for the node, so
one sweep costs ``N × M`` checks with ``M`` messages stored (delivered ones stay stored until the
ServerApp pulls their replies). With one node per ML-100K user, every all-user round (the user
query, each evaluation: ``M = N = 943``) spends the simulation process's one core, under the
state's lock and the GIL, on ~900,000 checks per sweep, and the client actors wait.

The fix: :func:`index_dispatch` gives that one state instance a message store that also keeps,
per destination node, the ids of its messages in insertion order, and a ``get_message_ins`` that
runs the original body (same validation, same filter, same order, same "delivered" marking) over
that node's messages only. Messages, replies and their order per node are unchanged, so results
are identical (``tests/test_sim_dispatch.py`` compares the two on a populated state). The one
difference: the original scan also re-validated (and dropped, when expired) *other* nodes'
messages as a side effect; here each node's messages are validated when that node is swept,
which the engine does every 0.1 s for every node.

It is applied by the ServerApp only when it runs inside the simulation engine (its grid is an
``InMemoryGrid`` over an ``InMemoryLinkState``) and Flower is 1.42.x, the version whose code this
was written against; otherwise nothing changes. A deployed SuperLink runs in another process
and is never touched.
"""
from __future__ import annotations

import types
from collections import defaultdict
from typing import Any

#: The Flower versions whose ``InMemoryLinkState.get_message_ins`` this reproduces.
SUPPORTED_FLWR = ("1.42.",)


class NodeIndexedStore(dict):
    """``message_ins_store`` (message id → Message) that also keeps ``by_node``: destination node
    id → {message id: None} in insertion order. The state only ever adds (``store[id] = m``) and
    removes (``del store[id]``) entries, so those two keep the index."""

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__()
        self.by_node: defaultdict[int, dict[str, None]] = defaultdict(dict)
        for key, msg in items.items():
            self[key] = msg

    def __setitem__(self, key: str, msg: Any) -> None:
        super().__setitem__(key, msg)
        self.by_node[msg.metadata.dst_node_id][key] = None

    def __delitem__(self, key: str) -> None:
        msg = self[key]
        super().__delitem__(key)
        ids = self.by_node.get(msg.metadata.dst_node_id)
        if ids is not None:
            ids.pop(key, None)
            if not ids:
                del self.by_node[msg.metadata.dst_node_id]


def _get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None) -> list:
    """``InMemoryLinkState.get_message_ins`` (flwr 1.42) over ``node_id``'s messages only."""
    from flwr.supercore.date import now   # the module's own clock (imported when indexing)

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    if node_id not in self.message_ins_store.by_node:
        return []   # most nodes of a sweep during a training round: nothing stored for them
    message_ins_list = []
    with self.lock:
        for msg_id in list(self.message_ins_store.by_node.get(node_id, ())):
            self._check_stored_messages({msg_id})
            if (
                (msg_ins := self.message_ins_store.get(msg_id))
                and msg_ins.metadata.dst_node_id == node_id
                and (run_id is None or msg_ins.metadata.run_id == run_id)
                and msg_ins.metadata.delivered_at == ""
            ):
                message_ins_list.append(msg_ins)
            if limit and len(message_ins_list) == limit:
                break
    if message_ins_list:
        delivered_at = now().isoformat()
        for msg_ins in message_ins_list:
            msg_ins.metadata.delivered_at = delivered_at
    return message_ins_list


def index_dispatch(state: Any) -> bool:
    """Give ``state`` (an ``InMemoryLinkState`` of flwr 1.42.x) the per-node index; returns
    whether it did (False: another state class or Flower version, left as it was; True also
    when it was already indexed)."""
    import flwr
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.date import now  # noqa: F401  (fail here, not in the engine's thread)

    if type(state) is not InMemoryLinkState or not flwr.__version__.startswith(SUPPORTED_FLWR):
        return False
    with state.lock:
        if not isinstance(state.message_ins_store, NodeIndexedStore):
            state.message_ins_store = NodeIndexedStore(state.message_ins_store)
            state.get_message_ins = types.MethodType(_get_message_ins, state)
    return True


def index_grid_dispatch(grid: Any) -> bool:
    """:func:`index_dispatch` on the state behind ``grid`` when it is the simulation engine's
    ``InMemoryGrid``; False (nothing done) for any other grid."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if not isinstance(grid, InMemoryGrid):
        return False
    return index_dispatch(grid.state)
