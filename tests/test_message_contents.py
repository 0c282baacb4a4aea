"""What leaves a client, message by message (issue 16, privacy): fedmm's own ClientApp on a
tiny dataset, driven by the base strategy through Flower's ``ClientApp.__call__`` dispatch and
``Strategy.start`` with an in-process loopback Grid. Every reply's records, keys and shapes are
checked against the contract in ``fedmm.protocol``: the shared arrays only (never a private
one), no user / partition id outside the query round, counts only where the aggregation asks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from conftest import write_tiny_grouplens
from fedmm.client_app import app as fedmm_client_app
from fedmm.config import RunConfig, load_app_config
from fedmm.factory import data_for, model_for
from fedmm.protocol import dict_to_arrays
from strategies import FedRecStrategy

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 6


class RecordingGrid:
    """Nodes in this process, each with its own persistent Context; keeps every reply."""

    def __init__(self, run_config: dict) -> None:
        self.contexts = {100 + u: Context(run_id=1, node_id=100 + u,
                                          node_config={"partition-id": u, "num-partitions": N_USERS},
                                          state=RecordDict(), run_config=run_config)
                         for u in range(N_USERS)}
        self.replies: list[tuple[str, int, object]] = []

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            reply = fedmm_client_app(m, self.contexts[m.metadata.dst_node_id])
            assert not reply.has_error(), reply.error.reason
            self.replies.append((m.metadata.message_type, m.metadata.dst_node_id, reply))
            out.append(reply)
        return out


@pytest.mark.parametrize("backbone, aggregation", [("pfedrec", "fedavg"), ("fedrap", "itemwise")])
def test_every_reply_carries_only_the_contract(tmp_path, serverapp_identity, backbone, aggregation):
    data_dir = write_tiny_grouplens(tmp_path / "gl", n_users=N_USERS)
    run_config = load_app_config(ROOT / "pyproject.toml")
    run_config.update({"dataset": f"grouplens:{data_dir}", "cache-dir": str(tmp_path / "cache"),
                       "backbone": backbone, "aggregation": aggregation})
    cfg = RunConfig.from_mapping(run_config)
    server = model_for(cfg, data_for(cfg).num_items)
    state = server.state_dict()
    shared = {k: state[k].detach().numpy() for k in server.shared_keys()}
    private = set(server.private_keys())
    assert private and not private & set(shared)

    grid = RecordingGrid(run_config)
    strategy = FedRecStrategy(fraction_train=0.5, eval_every=1, seed=0, aggregation=aggregation,
                              min_available_nodes=N_USERS)
    strategy.start(grid=grid, initial_arrays=dict_to_arrays(shared), num_rounds=2)

    kinds = [k for k, _, _ in grid.replies]
    assert kinds.count("query") == N_USERS and kinds.count("train") == 2 * (N_USERS // 2)
    assert kinds.count("evaluate") == 2 * N_USERS
    for kind, node, reply in grid.replies:
        content = reply.content
        if kind == "query":   # the one place the partition id is sent
            assert set(content.keys()) == {"metrics"}
            assert dict(content["metrics"]) == {"user": node - 100}
        elif kind == "train":
            expected = {"arrays", "metrics"} | ({"extras"} if aggregation == "itemwise" else set())
            assert set(content.keys()) == expected
            arrays = content["arrays"]
            assert list(arrays.keys()) == list(shared)            # shared parameters only
            for k, v in arrays.items():
                assert v.numpy().shape == shared[k].shape and v.numpy().dtype == shared[k].dtype
            assert set(dict(content["metrics"])) == {"num-examples", "train-loss"}
            if aggregation == "itemwise":
                counts = content["extras"]
                assert list(counts.keys()) == ["item-counts"]
                assert counts["item-counts"].numpy().shape == (server.num_items,)
        else:                 # evaluate: per-user metrics only, no parameters
            assert set(content.keys()) == {"metrics"}
            names = set(dict(content["metrics"]))
            assert "user" not in names and cfg.select_metric in names
            assert names - {"eval-loss", "num-examples"} <= set(cfg.metric_names("valid")
                                                                 + cfg.metric_names("test"))
    # Private parts stayed in each node's own state.
    trained = {node for kind, node, _ in grid.replies if kind == "train"}
    for node in trained:
        kept = grid.contexts[node].state["fedmm.private"]
        assert set(kept.keys()) == private
    assert np.isfinite(strategy.best["valid_sampled_ndcg@10"])
