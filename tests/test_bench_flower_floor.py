"""bench/flower_floor.py: the do-nothing apps answer every node, and the timings are recorded.

Run through fedmm's in-process grid (no Ray: the test checks the apps, not Flower's engine)."""
from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from fedmm.inprocess import InProcessGrid
from script_util import load_script

floor = load_script("bench/flower_floor.py", "flower_floor")

pytestmark = pytest.mark.usefixtures("serverapp_identity")


class CountingGrid(InProcessGrid):
    """In-process grid that also keeps the size of every message it handles."""

    def __init__(self, app, num_users):
        super().__init__(app, num_users, {})
        self.sizes = []

    def _handle(self, msg):
        reply = super()._handle(msg)
        arrays = [a for rec in msg.content.array_records.values() for a in rec.values()]
        back = [a for rec in reply.content.array_records.values() for a in rec.values()]
        self.sizes.append((msg.metadata.message_type, sum(len(a.data) for a in arrays),
                           sum(len(a.data) for a in back), reply.has_error()))
        return reply


@pytest.mark.parametrize("reply_kb", [0.0, 2.0])
def test_floor_apps_send_one_message_per_node_and_time_each_round(reply_kb):
    result: dict = {}
    server, client = floor.floor_apps(nodes=5, rounds=2, kb=4.0, reply_kb=reply_kb,
                                      indexed=True, result=result)
    grid = CountingGrid(client, num_users=5)
    server(grid=grid, context=Context(run_id=1, node_id=0, node_config={},
                                      state=RecordDict(), run_config={}))
    assert result["indexed"] is False            # not Flower's InMemoryGrid: left alone
    assert isinstance(result["query_cold_s"], float)
    assert len(result["query_warm_s"]) == 2 and len(result["evaluate_s"]) == 2
    assert grid.messages == 5 * (1 + 2 + 2)
    kinds = [k for k, *_ in grid.sizes]
    assert kinds == ["query"] * 15 + ["evaluate"] * 10
    evals = [s for s in grid.sizes if s[0] == "evaluate"]
    assert all(down >= 4 * 1024 and not err for _, down, _, err in evals)
    assert all((up >= 2 * 1024) == (reply_kb > 0) for _, _, up, _ in evals)


def test_floor_refuses_bad_arguments():
    with pytest.raises(SystemExit):
        floor.main(["--nodes", "0"])
