"""Secure aggregation (``secagg = true``, fedmm/secagg.py): fedmm's strategies and ClientApp
run Flower's SecAgg+ protocol; the server sees only sums.

The runs use the in-process grid (fedmm/inprocess.py: fedmm's real ClientApp, mods included)
behind a recording grid that keeps every message the server sends and receives, i.e. exactly
what the server sees. Client-side instrumentation (a wrapper around
:func:`fedmm.secagg.encode_update`, the client's own computation) records each client's true
update and its quantised encoding, which the server never receives.
"""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

import fedmm.secagg as secagg
from fedmm.client_app import app as client_app
from fedmm.config import ConfigError, RunConfig, load_app_config, merge_overrides, parse_kv_overrides
from fedmm.inprocess import InProcessGrid, set_identity
from fedmm.protocol import ARRAYS, ITEM_TABLE_KEY, SECAGG_MASKED, arrays_to_dict, dict_to_arrays
from e2e_util import ROOT

pytestmark = pytest.mark.usefixtures("serverapp_identity")


def make_cfg(data_dir, tmp_path, overrides: str = "") -> tuple[RunConfig, dict]:
    raw = merge_overrides(load_app_config(ROOT / "pyproject.toml"), parse_kv_overrides(
        f"dataset='grouplens:{data_dir}' cache-dir='{tmp_path / 'cache'}' out-dir='{tmp_path}' "
        f"fraction-train=0.5 eval-every=100 local-epochs=1 secagg-max-weight=200.0 {overrides}"),
        "test")
    return RunConfig.from_mapping(raw), raw


class RecordingGrid:
    """The in-process grid, recording every (message, reply) pair the server exchanges."""

    def __init__(self, inner: InProcessGrid) -> None:
        self.inner = inner
        self.log: list[tuple[Message, Message]] = []

    def get_node_ids(self):
        return self.inner.get_node_ids()

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        replies = self.inner.send_and_receive(messages, timeout)
        self.log.extend(zip(messages, replies))
        return replies

    def replies(self, message_type: str = "train"):
        return [r for m, r in self.log if m.metadata.message_type == message_type]


class Spy:
    """Client-side record of what each client encodes: node -> list (one per round) of
    ``(true arrays, weight, item counts, encoded ints)``."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[dict] = []
        real = secagg.encode_update

        def spy(arrays, weight, params, **kw):
            out = real(arrays, weight, params, **kw)
            self.calls.append({"arrays": {k: np.array(v) for k, v in arrays.items()},
                               "weight": weight, "counts": kw.get("item_counts"),
                               "node": kw["seed"][2], "round": kw["seed"][1],
                               "encoded": {k: v.copy() for k, v in out.items()}})
            return out

        monkeypatch.setattr(secagg, "encode_update", spy)

    def of_round(self, r: int) -> list[dict]:
        return [c for c in self.calls if c["round"] == r]


def run_strategy(cfg: RunConfig, raw: dict, rounds: int, app=None):
    """fedmm's strategy for ``cfg`` over the recording in-process grid; returns
    ``(strategy, final global arrays, grid)``."""
    from fedmm.factory import data_for, model_for
    from strategies.factory import build_strategy

    set_identity()
    data = data_for(cfg)
    model = model_for(cfg, data.num_items)
    state = model.state_dict()
    initial = {k: state[k].detach().cpu().numpy() for k in model.shared_keys()}
    strategy = build_strategy(cfg, data, model=model, run_config=raw)
    grid = RecordingGrid(InProcessGrid(app or client_app, data.num_users, raw))
    result = strategy.start(grid=grid, initial_arrays=dict_to_arrays(strategy.initial_arrays(initial)),
                            num_rounds=rounds, timeout=60)
    return strategy, arrays_to_dict(result.arrays), grid


def quantisation_bound(params: secagg.SecAggParams, weights, per_row=None) -> float:
    """Worst-case error of one secure average: each client's quantised value is off by less
    than one step ``2 * clip / quantization_range``; the average divides the sum of ``k`` of
    them by the summed weight ratio ``sum w / max_weight`` (per row under itemwise)."""
    step = 2 * params.clipping_range / params.quantization_range
    ratio = np.sum(weights) / params.max_weight
    if per_row is not None:
        ratio = np.min(np.sum(per_row, axis=0)[np.sum(per_row, axis=0) > 0]) / params.max_weight
    return len(weights) * step / ratio + 1e-6


@pytest.mark.parametrize("aggregation", ["fedavg", "itemwise"])
def test_secagg_gives_the_plain_average_up_to_quantisation(tmp_path, tiny_grouplens, aggregation,
                                                           monkeypatch):
    spy = Spy(monkeypatch)
    over = f"aggregation='{aggregation}'"
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, over)
    plain, plain_arrays, plain_grid = run_strategy(cfg, raw, 1)
    cfg_s, raw_s = make_cfg(tiny_grouplens, tmp_path, over + " secagg=true")
    secure, secure_arrays, grid = run_strategy(cfg_s, raw_s, 1)
    calls = spy.of_round(1)
    # The same clients trained on the same arrays: their true updates are the plain run's.
    plain_up = {r.metadata.src_node_id: arrays_to_dict(r.content[ARRAYS])
                for r in plain_grid.replies() if ARRAYS in r.content.array_records}
    assert sorted(c["node"] for c in calls) == sorted(plain_up) and len(calls) == 6
    for c in calls:
        for k, v in c["arrays"].items():
            np.testing.assert_array_equal(v, plain_up[c["node"]][k])
    counts = [c["counts"] for c in calls] if aggregation == "itemwise" else None
    bound = quantisation_bound(cfg_s.secagg_params, [c["weight"] for c in calls], counts)
    for k, v in plain_arrays.items():
        err = np.max(np.abs(secure_arrays[k].astype(np.float64) - v))
        print("secagg-error", aggregation, k, err, bound)
        assert err <= bound, (k, err, bound)
    assert secure.history[0]["failures"] == 0 and secure.history[0]["secagg-seconds"] > 0
    # Final metrics (one evaluation of the same users) close.
    for m in ("valid_sampled_ndcg@10", "test_full_hr@10"):
        assert abs(secure.history[-1][m] - plain.history[-1][m]) <= 0.02, m
