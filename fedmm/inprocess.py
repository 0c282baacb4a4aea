"""In-process engine: fedmm's own ServerApp and ClientApp, in one process, without Ray or a SuperLink.

Flower's simulation engine delivers every message through the SuperLink and a Ray actor; for a
sweep of many short runs on a few cores that transport costs more than the training (see
docs/benchmark.md). This engine runs the very same code: :func:`fedmm.server_app.main` with
the strategy of the run config, and every message handled by :data:`fedmm.client_app.app`
(the registered ``train`` / ``evaluate`` / ``query`` handlers) with one persistent
:class:`~flwr.app.Context` per node, as a SuperNode keeps it. A ClientApp exception becomes an
error reply, as the simulation engine reports it. Messages go in the strategy's order, one after
another, so a run is deterministic and gives the same ``final.json`` metrics as the simulation
engine with the same seed (tests/test_inprocess.py checks this on a tiny dataset).

What it is not: a deployment (no network, no isolation between clients) or a test of Flower's
transport; the README's main job and the deployment scripts use Flower's engines.

    python run.py --engine inprocess --run-config "method='gfmfr' num-server-rounds=50"
"""
from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

#: run id of in-process runs (there is no SuperLink to hand one out).
RUN_ID = 1


class InProcessGrid:
    """The part of Flower's :class:`~flwr.serverapp.Grid` that fedmm's strategies use
    (``get_node_ids``, ``send_and_receive``), with the nodes in this process.

    Parameters
    ----------
    app
        The ClientApp that handles every message.
    num_users
        One node per user; node ``u + 1`` holds user ``u`` (``partition-id = u``).
    run_config
        The flat, hyphenated run config every node's context carries.
    """

    def __init__(self, app: ClientApp, num_users: int, run_config: Mapping[str, Any]) -> None:
        self.app = app
        self.run_config = dict(run_config)
        self.contexts = {u + 1: Context(run_id=RUN_ID, node_id=u + 1,
                                        node_config={"partition-id": u, "num-partitions": num_users},
                                        state=RecordDict(), run_config=dict(run_config))
                         for u in range(num_users)}
        self.messages = 0

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def _handle(self, msg: Message) -> Message:
        self.messages += 1
        context = self.contexts[msg.metadata.dst_node_id]
        try:
            reply = self.app(msg, context)
        except Exception as exc:  # reported as an error reply, as Flower's engine does
            reason = f"{type(exc)}:<'{exc}'>\n{traceback.format_exc()}"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                            reply_to=msg)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply

    def send_and_receive(self, messages: Iterable[Message], timeout: float | None = None
                         ) -> list[Message]:
        """Each message handled in turn (``timeout`` is not needed: nothing is waited for)."""
        return [self._handle(m) for m in messages]


def set_identity() -> None:
    """Set the task identity that Flower's ServerApp runtime sets before ``main`` (messages take
    their run and source ids from it)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id = RUN_ID
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def run_inprocess(run_config: Mapping[str, Any], num_users: int) -> InProcessGrid:
    """Run fedmm's ServerApp ``main`` on ``run_config`` (the flat, hyphenated mapping ``flwr
    run`` would receive) with ``num_users`` in-process nodes; outputs go where the run config
    says (``out-dir`` / ``run-name``), exactly as in a Flower run. Returns the grid (its
    ``contexts`` hold the clients' private state)."""
    from fedmm.client_app import app as client_app
    from fedmm.server_app import main as server_main

    set_identity()
    grid = InProcessGrid(client_app, num_users, run_config)
    context = Context(run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    server_main(grid, context)
    return grid
