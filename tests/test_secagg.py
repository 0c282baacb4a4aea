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
        f"fraction-train=0.5 eval-every=100 local-epochs=1 secagg-max-weight=200.0 "
        f"secagg-max-count=10.0 {overrides}"),
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
                               # seed = (run seed, round, user); in-process node = user + 1
                               "node": kw["seed"][2] + 1, "round": kw["seed"][1],
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
        ratio = np.min(np.sum(per_row, axis=0)[np.sum(per_row, axis=0) > 0]) / params.max_count
    return len(weights) * step / ratio + 1e-6


@pytest.mark.parametrize("aggregation", ["fedavg", "mean", "itemwise"])
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
    weights = ([cfg_s.secagg_max_weight] * len(calls) if aggregation == "mean"
               else [c["weight"] for c in calls])
    bound = quantisation_bound(cfg_s.secagg_params, weights, counts)
    for k, v in plain_arrays.items():
        err = np.max(np.abs(secure_arrays[k].astype(np.float64) - v))
        assert err <= bound, (k, err, bound)
    assert secure.history[0]["failures"] == 0 and secure.history[0]["secagg-seconds"] > 0
    # Final metrics (one evaluation of the same users) close.
    for m in ("valid_sampled_ndcg@10", "test_full_hr@10"):
        assert abs(secure.history[-1][m] - plain.history[-1][m]) <= 0.02, m


def test_secagg_runs_track_the_plain_run_over_rounds(tmp_path, tiny_grouplens):
    """Three rounds: the quantisation error does not grow into a different model."""
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "aggregation='itemwise'")
    plain, plain_arrays, _ = run_strategy(cfg, raw, 3)
    cfg_s, raw_s = make_cfg(tiny_grouplens, tmp_path, "aggregation='itemwise' secagg=true")
    secure, secure_arrays, _ = run_strategy(cfg_s, raw_s, 3)
    for k, v in plain_arrays.items():
        assert np.max(np.abs(secure_arrays[k] - v)) < 0.01, k
    assert [sorted(r["client-bytes"]) for r in secure.history] == \
           [sorted(r["client-bytes"]) for r in plain.history]        # the same users trained
    for m in ("valid_sampled_ndcg@10", "test_full_hr@10", "train-loss"):
        assert abs(secure.history[-1][m] - plain.history[-1][m]) <= 0.02, m


def _masked_replies(grid: RecordingGrid):
    return [(m, r) for m, r in grid.log if not r.has_error()
            and SECAGG_MASKED in r.content.array_records]


def test_server_sees_only_masked_vectors_and_their_sum(tmp_path, tiny_grouplens, monkeypatch):
    spy = Spy(monkeypatch)
    sums = []
    real_unmask = secagg.SecAggPlusRound.unmask

    def unmask(self, masked):
        out = real_unmask(self, masked)
        sums.append((self.server_round, {k: v.copy() for k, v in out.items()}))
        return out

    monkeypatch.setattr(secagg.SecAggPlusRound, "unmask", unmask)
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true backbone='fedncf'")
    strategy, _, grid = run_strategy(cfg, raw, 2)
    p = cfg.secagg_params
    M = p.modulus_range
    trues = [c["arrays"] for c in spy.calls]
    assert len(spy.calls) == 12 and len(trues[0]) > 1          # fedncf: item table + layers
    # 1. No message the server receives carries a client's arrays in any form it can read.
    for m, r in grid.log:
        if m.metadata.message_type != "train":
            continue
        assert ARRAYS not in r.content.array_records
        for rec in r.content.array_records.values():
            for name, arr in rec.items():
                a = arr.numpy()
                for true in trues:
                    for v in true.values():
                        if a.shape == v.shape:
                            assert not np.allclose(a, v, atol=1e-2), name
    # 2. The masked vectors look nothing like the clients' encoded updates: uniform mod M.
    masked = _masked_replies(grid)
    assert len(masked) == 12
    for m, r in masked:
        (call,) = [c for c in spy.calls if c["node"] == m.metadata.dst_node_id
                   and c["round"] == int(m.metadata.group_id)]
        vec = arrays_to_dict(r.content[SECAGG_MASKED])
        # (the masks come from os.urandom keys: the bounds are 5 standard deviations of
        # independent uniform masks, failing by chance with probability ~1e-6 each)
        for k, enc in call["encoded"].items():
            assert np.mean(vec[k] == enc) < 0.01, k
            if enc.size > 100:
                sd = 1 / np.sqrt(enc.size)
                assert abs(np.corrcoef(vec[k].ravel(), enc.ravel())[0, 1]) < 5 * sd, k
                assert abs(vec[k].mean() / M - 0.5) < 5 * 0.2887 * sd, k  # uniform on [0, M)
        # What the server would read as this client's item table is noise.
        key = "array/" + ITEM_TABLE_KEY
        read = dequantize([vec[key]], p.clipping_range, p.quantization_range)[0] / (
            call["weight"] / p.max_weight)
        assert abs(np.corrcoef(read.ravel(), call["arrays"][ITEM_TABLE_KEY].ravel())[0, 1]) \
            < 5 / np.sqrt(read.size)
    # 3. The unmasked result is exactly the sum of the clients' quantised updates.
    assert [r for r, _ in sums] == [1, 2]
    for rnd, total in sums:
        calls = spy.of_round(rnd)
        assert len(calls) == 6
        for k, v in total.items():
            np.testing.assert_array_equal(v, sum(c["encoded"][k] for c in calls), err_msg=k)
    # 4. Only the train-reply scalars go in the clear (as in Flower's SecAgg+).
    for _, r in masked:
        assert set(r.content.keys()) == {"metrics", SECAGG_MASKED, RECORD_KEY_CONFIGS}
    # The stages: setup, share keys, collect, unmask per round, to the sampled clients.
    stages = [m.content[RECORD_KEY_CONFIGS][Key.STAGE] for m, _ in grid.log
              if RECORD_KEY_CONFIGS in m.content.config_records]
    assert stages == ([Stage.SETUP] * 6 + [Stage.SHARE_KEYS] * 6
                      + [Stage.COLLECT_MASKED_VECTORS] * 6 + [Stage.UNMASK] * 6) * 2
    assert all(r["secagg-bytes"] > 0 for r in strategy.history)


def dropping_app(stage_of_drop: dict[str, int]):
    """fedmm's ClientApp, but the first ``n`` nodes reaching each named stage fail there (an
    error reply, as a node that dies or raises)."""
    left = dict(stage_of_drop)
    dropped: dict[str, list[int]] = {k: [] for k in left}

    def app(msg, context):
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            stage = msg.content[RECORD_KEY_CONFIGS][Key.STAGE]
            if left.get(stage, 0) > 0 or context.node_id in dropped.get(stage, []):
                if context.node_id not in dropped[stage]:
                    left[stage] -= 1
                    dropped[stage].append(context.node_id)
                raise ConnectionError(f"node {context.node_id} lost in stage {stage}")
        return client_app(msg, context)

    app.dropped = dropped
    return app


def test_round_survives_dropouts_after_share_keys(tmp_path, tiny_grouplens, monkeypatch):
    spy = Spy(monkeypatch)
    sums = []
    real_unmask = secagg.SecAggPlusRound.unmask
    monkeypatch.setattr(secagg.SecAggPlusRound, "unmask",
                        lambda self, masked: sums.append(real_unmask(self, masked)) or sums[-1])
    # Two nodes die while training (after sharing keys), one more before unmasking: 6 sampled,
    # threshold 3 of 6 shares.
    app = dropping_app({Stage.COLLECT_MASKED_VECTORS: 2, Stage.UNMASK: 1})
    # fedavg: the expected average below weights by num-examples (mean is covered above)
    cfg, raw = make_cfg(tiny_grouplens, tmp_path,
                        "secagg=true min-train-replies=3 aggregation='fedavg'")
    strategy, arrays, grid = run_strategy(cfg, raw, 1, app=app)
    rec = strategy.history[0]
    assert rec["failures"] == 2 and len(rec["failed-users"]) == 2
    # (the training-stage losses are the failures above; stage 4's are listed by stage)
    assert rec["secagg-dropped"] == {Stage.UNMASK: [strategy.user_of[app.dropped[Stage.UNMASK][0]]]}
    assert sorted(rec["failed-users"]) == sorted(
        strategy.user_of[n] for n in app.dropped[Stage.COLLECT_MASKED_VECTORS])
    assert rec["secagg-threshold"] == 3
    # The 4 masked vectors (the one lost at unmask included) are summed exactly: the dead
    # nodes' pairwise masks were rebuilt from their key shares.
    calls = spy.of_round(1)
    assert len(calls) == 4
    assert {c["node"] for c in calls}.isdisjoint(app.dropped[Stage.COLLECT_MASKED_VECTORS])
    for k, v in sums[0].items():
        np.testing.assert_array_equal(v, sum(c["encoded"][k] for c in calls), err_msg=k)
    w = np.array([c["weight"] for c in calls])
    expected = sum(wi * c["arrays"][ITEM_TABLE_KEY] for wi, c in zip(w, calls)) / w.sum()
    assert np.max(np.abs(arrays[ITEM_TABLE_KEY] - expected)) <= quantisation_bound(
        cfg.secagg_params, w)


def test_too_many_dropouts_fail_the_round_clearly(tmp_path, tiny_grouplens):
    # Threshold 5 of 6 shares: two lost while training leave 4.
    app = dropping_app({Stage.COLLECT_MASKED_VECTORS: 2})
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true secagg-threshold=5.0")
    with pytest.raises(secagg.SecAggError, match="need at least 5.*threshold 5"):
        run_strategy(cfg, raw, 1, app=app)
    # min-train-replies counts the masked vectors, as it counts replies without SecAgg+.
    app = dropping_app({Stage.COLLECT_MASKED_VECTORS: 1})
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true min-train-replies=6")
    with pytest.raises(RuntimeError, match="5 of 6 train replies succeeded, fewer than "
                                           "min-train-replies = 6"):
        run_strategy(cfg, raw, 1, app=app)


def test_one_sampled_client_is_refused(tmp_path, tiny_grouplens):
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true fraction-train=0.1")
    with pytest.raises(secagg.SecAggError, match="at least 2 sampled clients"):
        run_strategy(cfg, raw, 1)


@pytest.mark.parametrize("overrides, match", [
    ("method='gfmfr'", "GFMFR cannot run under secure aggregation.*P_u"),
    ("secagg-modulus-range=3000000000", "power of 2"),
    ("secagg-quantization-range=8589934592", "greater than `quantization_range`"),
    ("secagg-num-shares=2.0", "greater than 2"),
    ("secagg-threshold=0.0", "secagg-threshold"),
    ("secagg-clipping-range=0.0", "clipping_range"),
])
def test_impossible_combinations_are_config_errors(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_cfg(tmp_path, tmp_path, f"secagg=true {overrides}")
    make_cfg(tmp_path, tmp_path, overrides)  # fine without secagg


def test_gfmfr_strategy_refuses_secagg():
    import strategies

    with pytest.raises(ValueError, match="GFMFR cannot run under secure aggregation"):
        strategies.GFMFR(settings=strategies.GFMFRConfig(), modalities={}, model=None,
                         secagg=secagg.SecAggParams())


def test_client_refuses_a_weight_above_max_weight():
    params = secagg.SecAggParams(max_weight=10.0)
    with pytest.raises(ValueError, match="exceeds secagg-max-weight = 10.0"):
        secagg.encode_update({"x": np.zeros(3)}, 11.0, params, aggregation="fedavg")
    with pytest.raises(ValueError, match="exceeds secagg-max-count = 100.0"):
        secagg.encode_update({"x": np.zeros(3)}, 1.0, params, aggregation="itemwise",
                             item_key="x", item_counts=np.array([1, 101, 0]))
    with pytest.raises(ValueError, match="NaN"):
        secagg.encode_update({"x": np.array([np.nan])}, 1.0, params, aggregation="fedavg")
    enc = secagg.encode_update({"x": np.zeros(3)}, 11.0, params, aggregation="mean")
    assert enc["weight"][0] == params.quantization_range  # mean: every client weighs 1 x max


def test_fedsllm_prototype_counts_are_summed_securely(serverapp_identity, tmp_path):
    """FedSLLM needs only the sum of the clients' prototype counts: under SecAgg+ they are
    summed with the arrays (exact integers) and equal the plain run's; a foreign ClientApp
    (tests/test_foreign_app.py) gets SecAgg+ by wrapping it with the mod."""
    import strategies
    from test_fedsllm import CountingEncoder, ScriptedLLM, _items, _settings
    from test_foreign_app import COMMON, N_ITEMS, LoopbackGrid, initial, make_foreign_app

    def run(params):
        llm = ScriptedLLM(["1. Action adventure\n2. Romantic comedy"] * 3)
        strategy = strategies.FedSLLM(settings=_settings(sampler="fedsllm", proto_update_every=1,
                                                         align_every=1),
                                      items=_items(N_ITEMS), dataset_key="foreign",
                                      cache_dir=tmp_path / "cache", run_dir=tmp_path / f"run{params is None}",
                                      generator=llm, encode_fn=CountingEncoder(),
                                      secagg=params, **COMMON)
        foreign = make_foreign_app()
        grid = LoopbackGrid(lambda m, c: secagg.secagg_mod(m, c, foreign))
        strategy.start(grid=grid, initial_arrays=dict_to_arrays(strategy.initial_arrays(initial())),
                       num_rounds=2)
        return strategy, grid

    plain, _ = run(None)
    secure, grid = run(secagg.SecAggParams(max_weight=100.0))
    assert [r["prototype-counts"] for r in secure.history] == \
           [r["prototype-counts"] for r in plain.history]
    masked = [m for m in grid.sent if RECORD_KEY_CONFIGS in m.content.config_records]
    assert len(masked) == 2 * 4 * 4                       # 4 stages x 4 clients x 2 rounds


def test_privacy_attack_is_at_chance_on_what_the_server_sees(tmp_path, monkeypatch):
    """bench/privacy_attack.py's changed-rows + PCA-sign attack: near-exact on plain uploads,
    at chance on the masked vectors, the only per-user thing the server holds under SecAgg+."""
    from bench.privacy_attack import attack_users, make_config, summarise
    from tests.conftest import write_grouped_grouplens

    d = write_grouped_grouplens(tmp_path / "gl", sizes=(4, 4, 4, 4), items_per_group=60, per_user=22)
    common = (f"dataset='grouplens:{d}' cache-dir='{tmp_path / 'cache'}' centralised-epochs=0 "
              "backbone='pfedrec'")
    users = list(range(0, 16, 2))
    base = summarise(attack_users(make_config(common), users))
    secure = summarise(attack_users(make_config(f"{common} secagg=true"), users))
    assert base["precision"] >= 0.95
    chance = secure["chance_precision"]
    from fedmm.factory import data_for

    assert secure["n_changed"] == data_for(make_config(common)).num_items  # every row "changed"
    # (random masks: the bounds are ~5 standard deviations over the 8 users)
    assert abs(secure["precision"] - chance) < 0.05, (secure, chance)
    assert abs(secure["precision_at_n"] - chance) < 0.12 and secure["recall"] < 0.8
    # The same reading of an unmasked vector is the upload: it is the masks that defend.
    monkeypatch.setattr(secagg, "pseudo_rand_gen",
                        lambda seed, num_range, dims: [np.zeros(d, np.int64) for d in dims])
    unmasked = summarise(attack_users(make_config(f"{common} secagg=true"), users))
    # (quantisation noise makes every row look changed, which blurs the sign split, but the
    # ranking attack is exact)
    assert unmasked["precision_at_n"] >= 0.95


def test_inprocess_run_with_secagg_writes_its_outputs(tmp_path, tiny_grouplens):
    """run.py --engine inprocess: fedmm's ServerApp main and ClientApp (its mod) end to end."""
    from e2e_util import finals
    from test_inprocess import rounds_of, run_inprocess_app

    proc, out = run_inprocess_app(tmp_path, tiny_grouplens,
                                  "num-server-rounds=2 eval-every=2 fraction-train=0.5 "
                                  "aggregation='itemwise' secagg=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (final,) = finals(out)
    assert final["status"] == "ok" and all(0.0 <= v <= 1.0 for v in final["test"].values())
    rounds = rounds_of(out)
    assert [r["secagg-shares"] for r in rounds] == [6, 6] and all(r["secagg-seconds"] > 0 for r in rounds)
    (tmp_path / "g").mkdir()
    proc, _ = run_inprocess_app(tmp_path / "g", tiny_grouplens, "method='gfmfr' secagg=true")
    assert proc.returncode != 0 and "GFMFR cannot run under secure aggregation" in proc.stderr


def test_secagg_through_flower_simulation_gives_the_inprocess_result(tmp_path, tiny_grouplens):
    """``secagg = true`` through Flower's simulation engine (Ray actors, SuperLink transport,
    the ClientApp's mod as Flower calls it): the four SecAgg+ stages run every round and the
    unmasked sums, hence every metric, equal the in-process engine's bit for bit (masks cancel
    exactly modulo the modulus; quantisation is deterministic). Evaluation runs SecAgg+ too
    (``secagg-eval``: the evaluate handler's mod)."""
    from e2e_util import finals, run_app
    from test_inprocess import rounds_of, run_inprocess_app

    overrides = ("num-server-rounds=3 eval-every=1 fraction-train=0.5 aggregation='itemwise' "
                 "secagg=true secagg-eval=true centralised-epochs=0")
    (tmp_path / "sim").mkdir()
    (tmp_path / "ip").mkdir()
    proc, sim_out = run_app(tmp_path / "sim", tiny_grouplens, overrides, seeds=[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc, ip_out = run_inprocess_app(tmp_path / "ip", tiny_grouplens, overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sim,), (ip,) = finals(sim_out), finals(ip_out)
    assert sim["status"] == "ok" and sim["test"] == ip["test"] and sim["valid"] == ip["valid"]
    sim_rounds, ip_rounds = rounds_of(sim_out), rounds_of(ip_out)
    assert [r["secagg-shares"] for r in sim_rounds] == [6, 6, 6]
    assert all(r["secagg-seconds"] > 0 for r in sim_rounds)
    assert [r["train-loss"] for r in sim_rounds] == [r["train-loss"] for r in ip_rounds]
    assert all(r["secagg-eval-seconds"] > 0 and r["eval-users"] == 12 for r in sim_rounds)


def test_secure_evaluation_gives_the_mean_and_no_user_metrics(tmp_path, tiny_grouplens):
    """``secagg-eval = true``: the server's evaluate replies carry only masked vectors (no
    per-user metric in the clear), and the unmasked mean equals the plain mean of the same
    users' metrics up to the quantisation step; training is untouched."""
    from fedmm.protocol import METRICS, SECAGG_MASKED

    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true")
    plain, _, plain_grid = run_strategy(cfg, raw, 2)
    cfg_e, raw_e = make_cfg(tiny_grouplens, tmp_path, "secagg=true secagg-eval=true")
    secure, _, grid = run_strategy(cfg_e, raw_e, 2)
    replies = grid.replies("evaluate")
    assert len(replies) == 12 and len(plain_grid.replies("evaluate")) == 12
    for r in replies:
        assert METRICS not in r.content.metric_records and SECAGG_MASKED in r.content.array_records
        assert list(r.content.array_records[SECAGG_MASKED]) == ["weight", "array/eval-metrics"]
    a, b = plain.history[-1], secure.history[-1]
    assert a["train-loss"] == b["train-loss"] and b["eval-users"] == a["eval-users"] == 12
    step = 2 * cfg_e.secagg_clipping_range / cfg_e.secagg_quantization_range
    keys = [k for k in a if k.startswith(("valid_", "test_"))]
    assert keys and all(abs(a[k] - b[k]) <= step for k in keys), [(k, a[k] - b[k]) for k in keys]
    assert b["secagg-eval-seconds"] > 0 and "secagg-eval-seconds" not in a


def test_secure_evaluation_config_errors(tmp_path, tiny_grouplens):
    from fedmm.factory import data_for
    from strategies.factory import build_strategy

    with pytest.raises(ConfigError, match="secagg-eval.*set secagg = true"):
        make_cfg(tiny_grouplens, tmp_path, "secagg-eval=true")
    # 12 users: the quantisation is lowered to fit half the modulus; below 2**8 levels, refused
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true secagg-eval=true "
                                                  "secagg-quantization-range=1073741824")
    assert cfg.secagg_params.for_clients(12).quantization_range == 2 ** 27   # 2*12*2**27 < 2**32
    assert cfg.secagg_params.for_clients(943).quantization_range == 2 ** 21
    build_strategy(cfg, data_for(cfg), run_config=raw)
    cfg, raw = make_cfg(tiny_grouplens, tmp_path, "secagg=true secagg-eval=true "
                                                  "secagg-quantization-range=2048 secagg-modulus-range=4096")
    with pytest.raises(ConfigError, match="secagg-eval: secure aggregation of 12 clients"):
        build_strategy(cfg, data_for(cfg), run_config=raw)
