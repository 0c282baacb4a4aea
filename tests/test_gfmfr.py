"""GFMFR strategy and client: hooks driven with real Flower Messages (no Grid, no simulation),
the distillation term, typed config errors, and one end-to-end run through ``flwr run``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from clients.base import FedRecClient, LocalSettings
from clients.gfmfr import GFMFRClient, preference_kl, scorer_plan
from fedmm.protocol import (DIS_LOSS, FEATURES, GFMFR_PAYLOAD, KL_ITEMS, PREFERENCE, REC_LOSS, ROUND_LAMBDA,
                            SCORER_PREFIX)
from e2e_util import finals, run_app
from fedmm.config import ConfigError, load_app_config
from fedmm.data.split import UserData
from fedmm.models import build_model
from server_tasks import modality_cache as enc
from server_tasks.fusion import fuse
from strategies.aggregation import ReplyError
from fedmm.protocol import dict_to_arrays
from server_tasks.group_pref import signal_diagnostics
from server_tasks.item_text import GFMFR_TEXT, item_texts
from server_tasks.modality_cache import EncoderConfig, item_modalities
from strategies.gfmfr import GFMFR, GFMFRConfig

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, DIM, N_USERS = 40, 8, 6


pytestmark = pytest.mark.usefixtures("serverapp_identity")


def defaults(**overrides) -> dict:
    cfg = load_app_config(ROOT / "pyproject.toml")
    cfg.update(overrides)
    return cfg


def settings(**overrides) -> GFMFRConfig:
    base = {"gfmfr-groups": 2, "gfmfr-epochs": 3, "gfmfr-hidden": 16, "gfmfr-group-dim": 4}
    base.update(overrides)
    return GFMFRConfig.from_mapping(defaults(**base))


def local_settings(ldp: float = 0.0) -> LocalSettings:
    return LocalSettings.make(batch_size=16, num_negatives=2, ldp_delta=ldp, topk=(5,),
                              eval_protocol="full", num_eval_negatives=5)


def user_data(u: int) -> UserData:
    rng = np.random.default_rng(u)
    items = rng.choice(np.arange(u % 2, N_ITEMS, 2), size=8, replace=False)  # two tastes
    return UserData(u, items[:6].astype(np.int64), int(items[6]), int(items[7]), N_ITEMS)


def make_model(backbone: str, user: int | None = None):
    torch.manual_seed(100 + (-1 if user is None else user))
    model = build_model(backbone, N_ITEMS, DIM, **({"layers": (2 * DIM, 8)} if backbone == "fedncf" else {}))
    if user is not None and hasattr(model, "set_neighbors"):
        model.set_neighbors(torch.as_tensor(user_data(user).train))
    return model


def make_client(backbone: str, user: int, cls=GFMFRClient, ldp: float = 0.0):
    return cls(make_model(backbone, user), user_data(user), local_settings(ldp))


def modality_tables(seed: int = 0):
    rng = np.random.default_rng(seed)
    kg_mask = np.arange(N_ITEMS) % 5 != 0
    return {"text": (rng.normal(size=(N_ITEMS, 12)).astype(np.float32), np.ones(N_ITEMS, bool)),
            "kg": (rng.normal(size=(N_ITEMS, 6)).astype(np.float32), kg_mask)}


class FakeGrid:
    """The one Grid method the strategy's sampling uses."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return self.node_ids


NODES = [1000 + 7 * u for u in range(N_USERS)]  # node id -> user = index
USER_OF = {nid: u for u, nid in enumerate(NODES)}


def make_strategy(backbone: str, run_dir: Path | None = None, aggregation: str = "fedavg",
                  **overrides) -> GFMFR:
    strategy = GFMFR(settings=settings(**overrides), modalities=modality_tables(),
                     model=make_model(backbone), run_dir=run_dir, num_rounds=5, fraction_train=1.0,
                     eval_every=10, seed=0, min_available_nodes=1, aggregation=aggregation)
    strategy.user_of = dict(USER_OF)  # what the query round (start -> discover_users) learns
    return strategy


def reply(msg: Message, client: FedRecClient) -> Message:
    """What fedmm.client_app.train does with a train message, without a Context."""
    content = msg.content
    names = list(content["arrays"].keys())
    payload = {name: {k: v.numpy() for k, v in rec.items()}
               for name, rec in content.array_records.items() if name != "arrays"}
    config = dict(content["config"])
    client.receive(payload, config)
    params, n, metrics = client.fit([content["arrays"][k].numpy() for k in names], config)
    out = RecordDict({"arrays": dict_to_arrays(dict(zip(names, params))),
                      "metrics": MetricRecord({**metrics, "num-examples": n})})
    extras = client.upload_extras()
    if extras:
        out["extras"] = dict_to_arrays(extras)
    return Message(content=out, reply_to=msg)


def run_round(strategy: GFMFR, rnd: int, arrays, clients: dict):
    messages = list(strategy.configure_train(rnd, arrays, ConfigRecord({}), FakeGrid(NODES)))
    replies = [reply(m, clients[m.metadata.dst_node_id]) for m in messages]
    assert all(r.metadata.src_node_id == m.metadata.dst_node_id for r, m in zip(replies, messages))
    new, _ = strategy.aggregate_train(rnd, replies)
    return messages, replies, new


def initial_arrays(backbone: str):
    model = make_model(backbone)
    state = model.state_dict()
    return dict_to_arrays({k: state[k].numpy() for k in model.shared_keys()})


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
def test_config_keys_declared_and_read():
    declared = {k for k in load_app_config(ROOT / "pyproject.toml") if k.startswith("gfmfr-")}
    assert declared == set(GFMFRConfig.keys())
    cfg = GFMFRConfig.from_mapping(defaults())
    assert cfg.modalities == ("text", "image", "kg") and cfg.schedule_name() == "smooth_progressive"


@pytest.mark.parametrize("key,value,match", [
    ("gfmfr-groups", 0, "must be >= 1"),
    ("gfmfr-groups", 2.5, "not a valid int"),
    ("gfmfr-cluster", "spectral", "choose one of"),
    ("gfmfr-fusion", "gru", "choose one of"),
    ("gfmfr-modalities", "text,audio", "subset of"),
    ("gfmfr-modalities", "", "subset of"),
    ("gfmfr-lr", "fast", "not a valid float"),
    ("gfmfr-lambda", -1.0, "finite and >= 0"),
    ("gfmfr-lambda-beta", 1.0, r"\[0, 1\)"),
    ("gfmfr-lambda-schedule", "cosine", "unknown schedule"),
    ("gfmfr-min-group-size", 0, "must be >= 1"),
    ("gfmfr-kl-items", "unobserved", "choose one of"),
    ("gfmfr-standardize", "maybe", "bool"),
])
def test_config_errors_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=f"'{key}'.*{match}"):
        GFMFRConfig.from_mapping(defaults(**{key: value}))


def test_config_missing_key():
    cfg = defaults()
    del cfg["gfmfr-lambda-max"]
    with pytest.raises(ConfigError, match="'gfmfr-lambda-max' is missing"):
        GFMFRConfig.from_mapping(cfg)


# Hand-computed: b = 0.2, beta = 0.5, ramp 10 rounds, cap 1. At t = 3 with L_rec = 0.6,
# L_dis = 0.2 (a_t = 3, r_t = 0.3) and lambda_{t-1} = 0.4; then at t = 20 (r_t = 1) with
# L_rec = 0.1, L_dis = 0.4 (a_t = 0.25) and lambda_{t-1} = 0.3.
@pytest.mark.parametrize("name,expected,at3,at20", [
    ("constant", "constant", 0.2, 0.2),
    ("scale-align", "scale_align", 0.2 * 3, 0.2 * 0.25),
    ("smooth", "smooth", 0.5 * 0.4 + 0.5 * 0.2 * 3, 0.5 * 0.3 + 0.5 * 0.2 * 0.25),
    ("progressive", "progressive", 0.2 * 0.3, 0.2),
    ("smooth-progressive", "smooth_progressive", 0.5 * 0.4 + 0.5 * 0.2 * 0.3,
     0.5 * 0.3 + 0.5 * 0.2),
    ("smooth-progressive-scale-align", "smooth_progressive_scale_align",
     0.5 * 0.4 + 0.5 * 0.2 * 0.3 * 3, 0.5 * 0.3 + 0.5 * 0.2 * 0.25),
])
def test_all_schedules(name, expected, at3, at20):
    cfg = settings(**{"gfmfr-lambda-schedule": name, "gfmfr-lambda": 0.2,
                      "gfmfr-lambda-beta": 0.5, "gfmfr-lambda-ramp": 10, "gfmfr-lambda-max": 1.0})
    assert cfg.schedule_name() == expected
    schedule = cfg.make_schedule()
    assert schedule(3, 0.6, 0.2, 0.4) == pytest.approx(at3, abs=1e-12)
    assert schedule(20, 0.1, 0.4, 0.3) == pytest.approx(at20, abs=1e-12)


def test_default_schedule_is_the_papers_without_the_loss_ratio():
    schedule = settings().make_schedule()  # pyproject defaults
    assert settings().schedule_name() == "smooth_progressive"
    # the losses do not enter: the same lambda whatever the rec/dis ratio
    assert schedule(7, 0.6, 0.2, 0.05) == schedule(7, 5.0, 0.001, 0.05) == \
        schedule(7, None, None, 0.05)


# ------------------------------------------------------------------------------------------
# modalities
# ------------------------------------------------------------------------------------------
def _items(n=5, **cols):
    base = {"title": [f"Movie {i}" for i in range(n)], "year": [1990.0 + i for i in range(n)],
            "genres": ["Drama|Comedy", "Drama", "", "Action", "Comedy"][:n],
            "description": [""] * n, "image": [""] * n}
    base.update(cols)
    return pd.DataFrame(base)


def test_gfmfr_text_has_genres_and_year():
    texts = item_texts(_items(), GFMFR_TEXT)
    assert texts[0] == "Movie 0. Drama, Comedy. Released 1990"
    assert texts[2] == "Movie 2. Released 1992"


def test_item_modalities_drops_what_the_dataset_lacks(tmp_path, monkeypatch):
    seen = []

    def fake_text(texts, model=None, batch_size=64, device="cpu"):
        seen.extend(texts)
        return np.ones((len(texts), 4), np.float32)

    monkeypatch.setattr(enc, "encode_texts", fake_text)
    tables, notes = item_modalities("toy", _items(), None, ["text", "image", "kg"],
                                    EncoderConfig(kg_dim=4), tmp_path)
    assert sorted(tables) == ["kg", "text"] and tables["kg"][0].shape == (5, 4)
    assert notes["image"].startswith("dropped") and "genres and release year only" in notes["kg"]
    assert "Movie 3. Action. Released 1993" in seen
    with pytest.raises(ConfigError, match="'gfmfr-modalities'"):
        item_modalities("toy", _items(), None, ["image"], EncoderConfig(), tmp_path)


# ------------------------------------------------------------------------------------------
# client: distillation term
# ------------------------------------------------------------------------------------------
def test_preference_kl_zero_at_match_and_gradient():
    z = torch.tensor([-2.0, 0.0, 1.5, 4.0], requires_grad=True)
    p = torch.sigmoid(z.detach())
    target = torch.stack([1 - p, p], 1)
    assert float(preference_kl(target, z).detach()) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])
    kl = preference_kl(other, z)
    kl.backward()
    torch.testing.assert_close(z.grad, (torch.sigmoid(z.detach()) - other[:, 1]) / 4)
    ref = (other * (other.clamp_min(1e-30).log() - torch.stack([1 - p, p], 1).log())).sum(1).mean()
    assert float(kl.detach()) == pytest.approx(float(ref), rel=1e-5)


def _own_preference(client) -> np.ndarray:
    with torch.no_grad():
        p = torch.sigmoid(client.model.full_scores()).numpy()
    return np.stack([1 - p, p], 1).astype(np.float32)


def test_client_kl_zero_for_own_predictions_and_gradient_flows():
    client = make_client("pfedrec", 0)
    client.receive({GFMFR_PAYLOAD: {PREFERENCE: _own_preference(client)}}, {})
    items = torch.arange(10)
    logits = client.model(items)
    extra = client.extra_loss(items, torch.ones(10), logits, {ROUND_LAMBDA: 2.0})
    assert float(extra.detach()) == pytest.approx(0.0, abs=1e-6)
    flipped = _own_preference(client)[:, ::-1].copy()
    client.receive({GFMFR_PAYLOAD: {PREFERENCE: flipped}}, {})
    extra = client.extra_loss(items, torch.ones(10), client.model(items), {ROUND_LAMBDA: 2.0})
    assert float(extra.detach()) > 0
    extra.backward()
    assert client.model.score_fn.weight.grad.abs().sum() > 0
    assert client.extra_loss(items, torch.ones(10), client.model(items), {ROUND_LAMBDA: 0.0}) is None


def test_kl_over_all_items_reaches_items_outside_the_batch():
    client = make_client("pfedrec", 0)
    target = _own_preference(client)
    target[20:] = target[20:, ::-1]          # disagree only on items 20.. (never in the batch)
    client.receive({GFMFR_PAYLOAD: {PREFERENCE: target.copy()}}, {})
    items = torch.arange(10)
    batch = client.extra_loss(items, torch.ones(10), client.model(items),
                              {ROUND_LAMBDA: 1.0, KL_ITEMS: "batch"})
    assert float(batch.detach()) == pytest.approx(0.0, abs=1e-6)
    every = client.extra_loss(items, torch.ones(10), client.model(items),
                              {ROUND_LAMBDA: 1.0, KL_ITEMS: "all"})
    assert float(every.detach()) > 0.01
    client.model.zero_grad()
    every.backward()
    grad = client.model.item_emb.weight.grad
    assert grad[20:].abs().sum() > 0 and grad[:20].abs().max() < 1e-6   # items 0..19 agree
    with pytest.raises(ValueError, match="gfmfr-kl-items"):
        client.extra_loss(items, torch.ones(10), client.model(items),
                          {ROUND_LAMBDA: 1.0, KL_ITEMS: "some"})


def test_lambda_zero_is_the_base_loss():
    params = [a.numpy() for a in initial_arrays("pfedrec").values()]
    base = make_client("pfedrec", 1, cls=FedRecClient)
    ours = make_client("pfedrec", 1)
    ours.receive({GFMFR_PAYLOAD: {PREFERENCE: _own_preference(ours)[:, ::-1].copy()}}, {})
    cfg = {"server-round": 2, "aggregation": "fedavg", ROUND_LAMBDA: 0.0}
    p_base, n_base, m_base = base.fit(params, dict(cfg))
    p_ours, n_ours, m_ours = ours.fit(params, dict(cfg))
    assert n_base == n_ours and m_ours["train-loss"] == pytest.approx(m_base["train-loss"])
    for a, b in zip(p_base, p_ours):
        np.testing.assert_array_equal(a, b)
    assert m_ours[DIS_LOSS] > 0 and m_ours[REC_LOSS] > 0  # measured, not added
    with_lambda = make_client("pfedrec", 1)
    with_lambda.receive({GFMFR_PAYLOAD: {PREFERENCE: _own_preference(with_lambda)[:, ::-1].copy()}}, {})
    p_kl, _, _ = with_lambda.fit(params, dict(cfg, **{ROUND_LAMBDA: 1.0}))
    assert not np.array_equal(p_kl[0], p_base[0])


def test_client_uploads_score_function_not_user_embedding():
    params = [a.numpy() for a in initial_arrays("pfedrec").values()]
    pf = make_client("pfedrec", 2)
    _, _, metrics = pf.fit(params, {"server-round": 1})
    assert REC_LOSS in metrics and DIS_LOSS not in metrics  # no signal: no distillation
    extras = pf.upload_extras()
    assert sorted(extras) == [SCORER_PREFIX + "score_fn.bias", SCORER_PREFIX + "score_fn.weight"]
    np.testing.assert_array_equal(extras[SCORER_PREFIX + "score_fn.weight"],
                                  pf.model.score_fn.weight.detach().numpy())
    noisy = make_client("pfedrec", 2, ldp=0.5)
    noisy.fit(params, {"server-round": 1})
    up = noisy.upload_extras()[SCORER_PREFIX + "score_fn.weight"]
    assert not np.allclose(up, noisy.model.score_fn.weight.detach().numpy())  # LDP applies
    for backbone in ("fedncf", "fedmf", "fedpergnn"):
        client = make_client(backbone, 2)
        client.fit([a.numpy() for a in initial_arrays(backbone).values()], {"server-round": 1})
        assert client.upload_extras() == {} and scorer_plan(client.model).mode == "client"
    assert scorer_plan(make_model("fedrap")).upload == ("score_fn.bias", "score_fn.weight")


def test_bad_payload_is_named():
    client = make_client("pfedrec", 0)
    with pytest.raises(ValueError, match="'gfmfr/preference' has shape"):
        client.receive({GFMFR_PAYLOAD: {PREFERENCE: np.zeros((3, 2), np.float32)}}, {})
    with pytest.raises(ValueError, match="no user embedding"):
        client.receive({GFMFR_PAYLOAD: {FEATURES: np.zeros((N_ITEMS, DIM), np.float16)}}, {})
    with pytest.raises(ValueError, match="expected 'preference' or 'features'"):
        client.receive({GFMFR_PAYLOAD: {"other": np.zeros(1)}}, {})


# ------------------------------------------------------------------------------------------
# strategy hooks, driven with real Messages
# ------------------------------------------------------------------------------------------
def test_server_mode_rounds(tmp_path):
    strategy = make_strategy("pfedrec", tmp_path)
    clients = {nid: make_client("pfedrec", u) for u, nid in enumerate(NODES)}
    arrays = initial_arrays("pfedrec")
    messages, replies, arrays = run_round(strategy, 1, arrays, clients)
    assert all(GFMFR_PAYLOAD not in m.content.array_records for m in messages)  # nobody grouped yet
    assert all(ROUND_LAMBDA in m.content["config"] for m in messages)
    info = strategy.round_info()
    assert sum(info["gfmfr-group-sizes"]) == N_USERS and info["gfmfr-distilled"] == 0
    assert info["gfmfr-seconds"] >= info["gfmfr-fusion-seconds"] > 0
    line = json.loads((tmp_path / "groups.jsonl").read_text().splitlines()[0])
    assert line["round"] == 1 and sorted(map(int, line["groups"])) == list(range(N_USERS))

    # Round 2: every node has a group; its preference is P̄_l(Q_l), checked by hand.
    messages, replies, arrays = run_round(strategy, 2, arrays, clients)
    groups = strategy.tracker.assignments[1]
    q = fuse(strategy.fusion, strategy._mods, strategy._masks)  # fusion after round 2 update
    for m in messages:
        pref = m.content[GFMFR_PAYLOAD][PREFERENCE].numpy()
        assert pref.shape == (N_ITEMS, 2) and pref.dtype == np.float32
        np.testing.assert_allclose(pref.sum(1), 1.0, atol=1e-6)
    assert all(DIS_LOSS in dict(r.content["metrics"]) for r in replies)
    # the signals now held (sent in round 3) are P̄_l(Q_l) with this round's members
    labels = strategy.tracker.assignments[2]
    for group in set(labels.values()):
        members = [r for r in replies if labels[USER_OF[r.metadata.src_node_id]] == group]
        w = np.array([float(dict(r.content["metrics"])["num-examples"]) for r in members])
        wt = np.average([r.content["extras"]["scorer/score_fn.weight"].numpy() for r in members],
                        axis=0, weights=w)
        bias = np.average([r.content["extras"]["scorer/score_fn.bias"].numpy() for r in members],
                          axis=0, weights=w)
        p = 1 / (1 + np.exp(-(q[group].numpy() @ wt.T + bias)[:, 0]))
        got = strategy._signals[group][PREFERENCE].numpy()
        np.testing.assert_allclose(got[:, 1], p, rtol=1e-4, atol=1e-5)
    assert set(groups) == set(labels)
    info = strategy.round_info()
    assert info["gfmfr-fusion-r2"] <= 1.0 and -1.0 <= info["gfmfr-signal-corr"] <= 1.0
    assert 0.0 <= info["gfmfr-signal-std"] <= 0.5

    # Round 3: lambda follows the schedule fed by the reported losses.
    rec, dis = strategy._losses
    prev = strategy._lambda
    expected = strategy.schedule(3, rec, dis, prev)
    messages, replies, arrays = run_round(strategy, 3, arrays, clients)
    assert messages[0].content["config"][ROUND_LAMBDA] == pytest.approx(expected)
    extra = strategy.finish()
    assert (tmp_path / "group_dynamics.png").stat().st_size > 0
    assert extra["gfmfr"]["scorer-mode"] == "server" and sorted(extra["gfmfr"]["modalities"]) == ["kg", "text"]
    assert len((tmp_path / "groups.jsonl").read_text().splitlines()) == 3


def test_missing_scorer_upload_is_a_named_reply_error():
    strategy = make_strategy("pfedrec")
    clients = {nid: make_client("pfedrec", u, cls=FedRecClient) for u, nid in enumerate(NODES)}
    messages = list(strategy.configure_train(1, initial_arrays("pfedrec"), ConfigRecord({}),
                                             FakeGrid(NODES)))
    replies = [reply(m, clients[m.metadata.dst_node_id]) for m in messages]
    with pytest.raises(ReplyError, match="'scorer/score_fn.bias'"):
        strategy.aggregate_train(1, replies)


@pytest.mark.parametrize("backbone", ["fedncf", "fedmf", "fedpergnn"])
def test_client_mode_keeps_user_embedding_home(backbone):
    strategy = make_strategy(backbone, **{"gfmfr-fusion": "attention"})
    clients = {nid: make_client(backbone, u) for u, nid in enumerate(NODES)}
    arrays = initial_arrays(backbone)
    _, replies, arrays = run_round(strategy, 1, arrays, clients)
    messages, replies, arrays = run_round(strategy, 2, arrays, clients)
    for msg in messages + replies:
        for rec in msg.content.array_records.values():
            assert not any("user_emb" in k for k in rec.keys())  # never travels
    shared_scorer = set(scorer_plan(make_model(backbone)).shared)
    for m in messages:
        rec = m.content[GFMFR_PAYLOAD]
        assert rec[FEATURES].numpy().dtype == np.float16 and rec[FEATURES].shape == (N_ITEMS, DIM)
        assert {k[len(SCORER_PREFIX):] for k in rec.keys() if k != FEATURES} == shared_scorer
    assert all(DIS_LOSS in dict(r.content["metrics"]) for r in replies)
    # The client's target: its own model with the group's shared scorer parts, applied to Q_l.
    nid = messages[0].metadata.dst_node_id
    client, rec = clients[nid], messages[0].content[GFMFR_PAYLOAD]
    client.receive({GFMFR_PAYLOAD: {k: v.numpy() for k, v in rec.items()}}, {})
    state = client.model.state_dict()
    model = make_model(backbone, client.data.user)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        for k in shared_scorer:
            model.state_dict()[k].copy_(torch.as_tensor(rec[SCORER_PREFIX + k].numpy()))
        p = torch.sigmoid(model.score_vectors(torch.as_tensor(rec[FEATURES].numpy()).float()))
    target = client._client_side_preference()
    torch.testing.assert_close(target[:, 1], p)


def test_single_group_ablation_and_unsampled_clients():
    strategy = make_strategy("pfedrec", aggregation="itemwise",
                             **{"gfmfr-cluster": "single", "gfmfr-fusion": "multiple"})
    assert strategy.num_groups == 1
    clients = {nid: make_client("pfedrec", u) for u, nid in enumerate(NODES)}
    strategy.fraction_train = 0.5
    messages, _, arrays = run_round(strategy, 1, initial_arrays("pfedrec"), clients)
    first = {m.metadata.dst_node_id for m in messages}
    messages, _, _ = run_round(strategy, 2, arrays, clients)
    for m in messages:  # only nodes seen in round 1 have a group
        assert (GFMFR_PAYLOAD in m.content.array_records) == (m.metadata.dst_node_id in first)
    assert set(strategy.tracker.assignments[1].values()) == {0}
    assert all("item-counts" in r.content["extras"] and "scorer/score_fn.weight" in r.content["extras"]
               for r in run_round(strategy, 3, arrays, clients)[1])


# ------------------------------------------------------------------------------------------
# end to end through Flower's simulation engine
# ------------------------------------------------------------------------------------------
def test_gfmfr_end_to_end(tmp_path, tiny_grouplens):
    proc, out = run_app(tmp_path, tiny_grouplens,
                        "method='gfmfr' backbone='pfedrec' num-server-rounds=3 eval-every=3 "
                        "fraction-train=0.5 gfmfr-groups=2 gfmfr-epochs=5 "
                        "gfmfr-modalities='text,image,kg'", seeds=[0])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["gfmfr-seconds"] > 0 and r["server-seconds"] >= r["gfmfr-seconds"] for r in rounds)
    assert rounds[0]["gfmfr-signalled"] == 0 and sum(rounds[0]["gfmfr-group-sizes"]) == 6
    assert sum(r["gfmfr-distilled"] for r in rounds[1:]) > 0  # returning clients distil
    groups = [json.loads(line) for line in (run / "groups.jsonl").read_text().splitlines()]
    assert [g["round"] for g in groups] == [1, 2, 3] and all(len(g["groups"]) == 6 for g in groups)
    assert (run / "group_dynamics.png").stat().st_size > 0
    (final,) = finals(out)
    assert final["status"] == "ok" and final["method"] == "gfmfr"
    block = final["gfmfr"]
    assert sorted(block["modalities"]) == ["kg", "text"] and block["modalities"]["text"] == 384
    assert block["modality-notes"]["image"].startswith("dropped")
    assert "gfmfr: modality 'image' dropped" in proc.stdout + proc.stderr


def test_signal_diagnostics_by_hand():
    torch.manual_seed(0)
    model = make_model("pfedrec")
    pbar = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("score_fn")}
    targets = torch.randn(3, N_ITEMS, DIM)
    targets[1] = float("nan")                      # group 1 had no members this round
    exact = signal_diagnostics(targets.clone(), targets, [0, 2], model, {0: pbar, 2: pbar})
    assert exact["gfmfr-fusion-r2"] == pytest.approx(1.0)
    assert exact["gfmfr-signal-corr"] == pytest.approx(1.0)
    logits = model.score_vectors(targets[0]).detach().reshape(-1)
    assert exact["gfmfr-signal-std"] == pytest.approx(
        float((torch.sigmoid(logits).std() + torch.sigmoid(
            model.score_vectors(targets[2]).detach().reshape(-1)).std()) / 2), rel=1e-5)
    # Q = the group mean of C for every item: no variance explained, constant signal.
    flat = targets.clone()
    flat[[0, 2]] = targets[[0, 2]].mean(dim=1, keepdim=True).expand(-1, N_ITEMS, -1)
    out = signal_diagnostics(flat, targets, [0, 2], model, {0: pbar, 2: pbar})
    assert out["gfmfr-fusion-r2"] == pytest.approx(0.0, abs=1e-6)
    assert out["gfmfr-signal-corr"] == 0.0 and out["gfmfr-signal-std"] == pytest.approx(0.0, abs=1e-7)
    client_mode = signal_diagnostics(targets.clone(), targets, [0, 2], None, {})
    assert set(client_mode) == {"gfmfr-fusion-r2"}
