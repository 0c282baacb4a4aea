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

Two more sweeps of the same kind, found by profiling a 6,040-node run (ML-1M, one node per
user; docs/benchmark.md), where they took about as much of the simulation process as the
messages themselves:

* the index above kept a node's messages after they were handed out, until the ServerApp pulled
  their replies, so a sweep still re-validated every delivered message. It now holds a node's
  *undelivered* messages only (a delivered one is never handed out again, so nothing else
  changes);
* the ServerApp's ``send_and_receive`` polls every 0.1 s for the replies to *all* its
  outstanding messages (``InMemoryGrid.pull_messages`` → ``get_message_res``, which
  re-validates each inquired message, checks its node, and looks for its reply). With the
  grid indexed (:func:`index_grid_dispatch`), a poll inquires only the messages whose reply is
  already stored (a dict lookup each), and every :data:`FULL_PULL_EVERY` seconds all of them,
  as Flower does, so that an expired message or a vanished node still comes back as Flower's
  error reply (at most that much later; the simulation's nodes never go offline and messages
  live 12 h by default). The replies returned are the same messages.

It is applied by the ServerApp only when it runs inside the simulation engine (its grid is an
``InMemoryGrid`` over an ``InMemoryLinkState``) and Flower is 1.42.x, the version whose code this
was written against; otherwise nothing changes. A deployed SuperLink runs in another process
and is never touched.
"""
from __future__ import annotations

import time
import types
from collections import defaultdict
from typing import Any

#: The Flower versions whose ``InMemoryLinkState.get_message_ins`` this reproduces.
SUPPORTED_FLWR = ("1.42.",)

#: Seconds between two polls of the indexed grid that inquire every outstanding message (the
#: polls in between inquire only the messages whose reply is stored).
FULL_PULL_EVERY = 5.0


class NodeIndexedStore(dict):
    """``message_ins_store`` (message id → Message) that also keeps ``by_node``: destination node
    id → {message id: None} of its *undelivered* messages, in insertion order. The state only
    ever adds (``store[id] = m``) and removes (``del store[id]``) entries, which keep the index;
    :func:`_get_message_ins`, the one place that marks a message delivered, drops it from the
    index."""

    def __init__(self, items: dict[str, Any]) -> None:
        super().__init__()
        self.by_node: defaultdict[int, dict[str, None]] = defaultdict(dict)
        for key, msg in items.items():
            self[key] = msg

    def __setitem__(self, key: str, msg: Any) -> None:
        super().__setitem__(key, msg)
        if msg.metadata.delivered_at == "":
            self.by_node[msg.metadata.dst_node_id][key] = None

    def __delitem__(self, key: str) -> None:
        msg = self[key]
        super().__delitem__(key)
        self.unindex(msg.metadata.dst_node_id, key)

    def unindex(self, node_id: int, key: str) -> None:
        """Drop ``key`` from ``node_id``'s undelivered messages (nothing if it is not there)."""
        ids = self.by_node.get(node_id)
        if ids is not None:
            ids.pop(key, None)
            if not ids:
                del self.by_node[node_id]


def _get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None) -> list:
    """``InMemoryLinkState.get_message_ins`` (flwr 1.42) over ``node_id``'s messages only."""
    from flwr.supercore.date import now   # the module's own clock (imported when indexing)

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    if node_id not in self.message_ins_store.by_node:
        return []   # most nodes of a sweep during a training round: nothing stored for them
    message_ins_list = []
    store = self.message_ins_store
    with self.lock:
        for msg_id in list(store.by_node.get(node_id, ())):
            self._check_stored_messages({msg_id})
            msg_ins = store.get(msg_id)
            if msg_ins is not None and msg_ins.metadata.delivered_at != "":
                store.unindex(node_id, msg_id)   # never handed out again
                continue
            if (
                msg_ins
                and msg_ins.metadata.dst_node_id == node_id
                and (run_id is None or msg_ins.metadata.run_id == run_id)
            ):
                message_ins_list.append(msg_ins)
            if limit and len(message_ins_list) == limit:
                break
        if message_ins_list:
            delivered_at = now().isoformat()
            for msg_ins in message_ins_list:
                msg_ins.metadata.delivered_at = delivered_at
                store.unindex(node_id, msg_ins.metadata.message_id)
    return message_ins_list


def _pull_messages(self, message_ids) -> list:
    """``InMemoryGrid.pull_messages`` (flwr 1.42) inquiring only the messages whose reply is
    stored, but for one poll in :data:`FULL_PULL_EVERY` seconds that inquires them all."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    msg_ids = set(message_ids)
    t = time.monotonic()
    if t - self._fedmm_full_pull_at >= FULL_PULL_EVERY:
        self._fedmm_full_pull_at = t
    else:
        with self.state.lock:
            replied = self.state.message_ins_id_to_message_res_id
            msg_ids = {i for i in msg_ids if i in replied}
        if not msg_ids:
            return []
    return InMemoryGrid.pull_messages(self, msg_ids)


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
    ``InMemoryGrid``, and its ``pull_messages`` replaced by :func:`_pull_messages`; False
    (nothing done) for any other grid."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if not isinstance(grid, InMemoryGrid) or not index_dispatch(grid.state):
        return False
    if not hasattr(grid, "_fedmm_full_pull_at"):
        grid._fedmm_full_pull_at = time.monotonic()   # the first poll inquires only replies
        grid.pull_messages = types.MethodType(_pull_messages, grid)
    return True
