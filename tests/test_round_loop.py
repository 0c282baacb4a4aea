"""strategies/base.py's round loop (Flower's ``Strategy.start`` loop, run by fedmm for fresh and
resumed runs alike) lets each round's replies go once they are aggregated: the uploads of one
round are not held while the next round's arrive."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.serverapp.strategy import FedAvg

from conftest import write_tiny_grouplens
from fedmm.client_app import app as fedmm_client_app
from fedmm.config import RunConfig, load_app_config
from fedmm.factory import data_for, model_for
from fedmm.protocol import dict_to_arrays
from strategies import FedRecStrategy

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 6


class WatchingGrid:
    """Nodes in this process; when a round's train messages come, counts how many replies of
    the previous train round are still alive (weak references only)."""

    def __init__(self, run_config: dict) -> None:
        self.contexts = {100 + u: Context(run_id=1, node_id=100 + u,
                                          node_config={"partition-id": u, "num-partitions": N_USERS},
                                          state=RecordDict(), run_config=run_config)
                         for u in range(N_USERS)}
        self.previous: list[weakref.ref] = []
        self.alive_at_next_train: list[int] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        train = bool(messages) and messages[0].metadata.message_type == "train"
        if train:
            gc.collect()
            self.alive_at_next_train.append(sum(r() is not None for r in self.previous))
        replies = [fedmm_client_app(m, self.contexts[m.metadata.dst_node_id]) for m in messages]
        if train:
            self.previous = [weakref.ref(r) for r in replies]
        return replies


@pytest.fixture
def setup(tmp_path):
    data_dir = write_tiny_grouplens(tmp_path / "gl", n_users=N_USERS)
    run_config = load_app_config(ROOT / "pyproject.toml")
    run_config.update({"dataset": f"grouplens:{data_dir}", "cache-dir": str(tmp_path / "cache"),
                       "backbone": "pfedrec"})
    cfg = RunConfig.from_mapping(run_config)
    model = model_for(cfg, data_for(cfg).num_items)
    state = model.state_dict()
    shared = {k: state[k].detach().numpy() for k in model.shared_keys()}
    return run_config, dict_to_arrays(shared)


def strategy() -> FedRecStrategy:
    return FedRecStrategy(fraction_train=0.5, eval_every=1, seed=0, min_available_nodes=N_USERS)


@pytest.mark.usefixtures("serverapp_identity")
def test_the_previous_rounds_replies_are_gone_when_the_next_round_starts(setup):
    run_config, arrays = setup
    grid = WatchingGrid(run_config)
    result = strategy().start(grid=grid, initial_arrays=arrays, num_rounds=3)
    assert grid.alive_at_next_train == [0, 0, 0]
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3]
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2, 3]


@pytest.mark.usefixtures("serverapp_identity")
def test_flowers_own_loop_would_have_held_them(setup):
    # The check above can fail: Flower's Strategy.start keeps a round's replies until the next
    # round's have arrived.
    run_config, arrays = setup
    grid = WatchingGrid(run_config)
    s = strategy()
    s.num_rounds = 3
    s.user_of = s.discover_users(grid)
    s._started = True
    FedAvg.start(s, grid=grid, initial_arrays=arrays, num_rounds=3)
    assert grid.alive_at_next_train[0] == 0 and all(n == N_USERS // 2
                                                    for n in grid.alive_at_next_train[1:])
