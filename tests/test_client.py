from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.base import FedRecClient, LocalSettings
from fedmm.config import RunConfig, load_app_config
from fedmm.data import UserData
from fedmm.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def settings(**kw) -> LocalSettings:
    d = load_app_config(ROOT / "pyproject.toml")
    d.update(kw)
    return RunConfig.from_mapping(d).local


def make_client(backbone="pfedrec", **kw):
    import torch

    torch.manual_seed(0)
    ud = UserData(3, np.array([1, 4, 7, 9, 12, 15], dtype=np.int64), 20, 21, 40)
    model = build_model(backbone, 40, 8)
    if hasattr(model, "set_neighbors"):
        model.set_neighbors(torch.as_tensor(ud.train))
    return FedRecClient(model, ud, settings(**kw))


@pytest.mark.parametrize("backbone", ["fedmf", "fedncf", "pfedrec", "fedrap", "fedpergnn"])
def test_fit_returns_shared_only_and_learns(backbone):
    c = make_client(backbone, **{"local-epochs": 5})
    p0 = c.get_parameters({})
    assert len(p0) == len(c.model.shared_keys())
    losses = []
    params = p0
    for r in range(1, 6):
        params, n, m = c.fit(params, {"server-round": r})
        losses.append(m["train-loss"])
    assert n == 6 * (1 + 4) and set(m) == {"train-loss"}   # no positive count, no user id
    assert losses[-1] < losses[0]
    assert set(c.private_state()) == set(c.model.private_keys())


def test_fit_is_deterministic():
    a, b = make_client(), make_client()
    pa = a.fit(a.get_parameters({}), {"server-round": 2})[0]
    pb = b.fit(b.get_parameters({}), {"server-round": 2})[0]
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_private_state_roundtrip_and_shape_errors():
    c = make_client()
    c.fit(c.get_parameters({}), {"server-round": 1})
    priv = c.private_state()
    d = make_client()
    d.load_private_state(priv)
    assert all(np.array_equal(d.private_state()[k], v) for k, v in priv.items())
    with pytest.raises(ValueError, match="shape"):
        c.set_parameters([np.zeros((3, 3), np.float32)])
    with pytest.raises(ValueError, match="expected 1 shared arrays"):
        c.set_parameters([])


def test_itemwise_counts_and_ldp():
    c = make_client()
    c.fit(c.get_parameters({}), {"server-round": 1, "aggregation": "itemwise"})
    counts = c.upload_extras()["item-counts"]
    assert counts.shape == (40,) and counts[[1, 4, 7]].min() >= 2 and counts.sum() == 2 * 6 * 5
    c2 = make_client(**{"ldp-delta": 1.0})
    c3 = make_client(**{"ldp-delta": 0.0})
    noisy = c2.fit(c2.get_parameters({}), {"server-round": 1})[0][0]
    clean = c3.fit(c3.get_parameters({}), {"server-round": 1})[0][0]
    assert 0.5 < np.abs(noisy - clean).mean() < 1.5  # Laplace(scale 1): E|x| = 1


def test_evaluate_metrics_in_range():
    c = make_client()
    loss, n, m = c.evaluate(c.get_parameters({}), {})
    assert n == 1 and np.isfinite(loss)
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert "test_full_hr@50" in m and "valid_sampled_ndcg@5" in m


def test_evaluate_ranks_a_hand_built_model_exactly():
    """Scores set by hand (PFedRec, score_fn = first coordinate): every metric is derived by
    hand below; negating the scores or ranking the wrong items fails it."""
    import math

    import torch

    scores = torch.tensor([9.0, 8, 5, 7, 6, 4, 3, 2, 1, 0])
    model = build_model("pfedrec", 10, 2)
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.stack([scores, torch.zeros(10)], dim=1))
        model.score_fn.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.score_fn.bias.zero_()
    ud = UserData(0, np.array([0, 1], dtype=np.int64), 2, 3, 10)  # train {0, 1}, valid 2, test 3
    c = FedRecClient(model, ud, settings(topk="1,5", **{"select-metric": "valid_sampled_ndcg@5"}))
    _, _, m = c.evaluate(c.get_parameters({}), {})
    # full: valid (5.0) is behind items 3 (7.0) and 4 (6.0), training items excluded -> rank 2;
    # test (7.0) is behind nothing once training items and the valid item are excluded -> rank 0.
    # sampled: the negatives are all 6 never-seen items {4..9}; valid is behind item 4 -> rank 1.
    expected = {
        "valid_full_hr@1": 0.0, "valid_full_hr@5": 1.0, "valid_full_ndcg@5": 1 / math.log2(4),
        "test_full_hr@1": 1.0, "test_full_ndcg@5": 1.0,
        "valid_sampled_hr@1": 0.0, "valid_sampled_ndcg@5": 1 / math.log2(3),
        "test_sampled_hr@1": 1.0, "test_sampled_ndcg@1": 1.0,
    }
    for k, v in expected.items():
        assert m[k] == pytest.approx(v), k


def test_client_tells_the_model_the_round():
    """FedRAP's penalties follow the server round (set_round): the same client, data and
    parameters give a different update at round 1 (no penalty) than at round 30."""
    import torch

    def update(server_round):
        torch.manual_seed(0)
        ud = UserData(3, np.array([1, 4, 7, 9, 12, 15], dtype=np.int64), 20, 21, 40)
        model = build_model("fedrap", 40, 8, local_init_std=0.5)
        c = FedRecClient(model, ud, settings(**{"local-epochs": 1}))
        p = c.fit(c.get_parameters({}), {"server-round": server_round})[0][0]
        return p, c.model.lambda_a

    (p1, lam1), (p30, lam30) = update(1), update(30)
    assert lam1 == 0.0 and lam30 > 0.09
    assert not np.allclose(p1, p30)


def test_train_eval_reports_the_freshly_trained_models_ranking():
    from fedmm.protocol import FRESH_PREFIX

    quiet = make_client("pfedrec")
    params, _, metrics = quiet.fit(quiet.get_parameters({}), {"server-round": 1})
    assert not any(k.startswith(FRESH_PREFIX) for k in metrics)        # off by default
    c = make_client("pfedrec", **{"train-eval": True})
    before = c.evaluate(c.get_parameters({}), {})[2]
    params, _, metrics = c.fit(c.get_parameters({}), {"server-round": 1})
    fresh = {k[len(FRESH_PREFIX):]: v for k, v in metrics.items() if k.startswith(FRESH_PREFIX)}
    assert set(fresh) == set(before) and "valid_sampled_hr@10" in fresh
    # The same figures as evaluating the uploaded parameters with this client's private part.
    assert fresh == c.evaluate(params, {})[2]
    assert fresh != before                                             # the model did train


def test_seed_torch_gives_torch_manual_seeds_stream():
    import torch

    from fedmm.device import seed_torch

    torch.manual_seed(123)
    a = torch.rand(5)
    seed_torch(123)
    assert torch.equal(torch.rand(5), a)
    seed_torch(-1)                    # the server copy's seed at seed 0 (factory.model_for)
    b = torch.rand(3)
    torch.manual_seed(-1)
    assert torch.equal(torch.rand(3), b)
