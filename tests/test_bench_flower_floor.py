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


def test_timed_records_the_first_call_and_restores_the_callable():
    class Owner:
        calls = 0

        @staticmethod
        def init(x):
            Owner.calls += 1
            if x < 0:
                raise ValueError(x)
            return x * 2

    real = Owner.init
    stamps: dict = {}
    with floor.timed(Owner, "init", stamps):
        assert Owner.init(3) == 6            # still does its work
        first = list(stamps["init"])
        Owner.init(4)                        # later calls do not move the span
    assert Owner.init is real and Owner.calls == 2
    assert stamps["init"] == first and first[0] <= first[1]
    failed: dict = {}
    with floor.timed(Owner, "init", failed), pytest.raises(ValueError):
        Owner.init(-1)
    assert len(failed["init"]) == 2 and Owner.init is real


def test_cold_breakdown_splits_the_cold_round_at_the_end_of_ray_init():
    # Ray's start ended 2.5 s into a 5 s cold round: 2.5 s of the round came after it.
    out = floor.cold_breakdown([10.0, 13.0], [10.5, 15.5])
    assert out == pytest.approx({"ray_init_s": 3.0, "cold_after_ray_init_s": 2.5})
    # Ray already up when the round began: the whole round is after it.
    assert floor.cold_breakdown([1.0, 2.0], [3.0, 4.5])["cold_after_ray_init_s"] == 1.5
    assert floor.cold_breakdown(None, [3.0, 4.5]) == {}
    assert floor.cold_breakdown([1.0, 2.0], None) == {}
