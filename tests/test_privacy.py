"""Upload privacy: the changed-rows + PCA-sign attack on real client uploads of a tiny dataset,
pseudo-interaction padding (``pad-items``) and count noise under ``ldp-delta``."""
from __future__ import annotations

import numpy as np
import pytest

from bench.privacy_attack import attack_users, make_config, pca_sign_attack, summarise
from clients.base import FedRecClient
from fedmm.config import ConfigError
from fedmm.data import UserData
from fedmm.models import build_model
from fedmm.privacy import count_noise, pad_item_updates
from tests.conftest import write_grouped_grouplens
from tests.test_client import settings


@pytest.fixture()
def grouped_cfg(tmp_path):
    """Overrides for 4 groups x 60 items, 20 positives per user, on a tiny GroupLens dataset."""
    d = write_grouped_grouplens(tmp_path / "gl", sizes=(4, 4, 4, 4), items_per_group=60, per_user=22)
    return (f"dataset='grouplens:{d}' cache-dir='{tmp_path / 'cache'}' centralised-epochs=0 "
            "backbone='pfedrec'")


def _attack(cfg_text: str, extra: str = "") -> dict:
    return summarise(attack_users(make_config(f"{cfg_text} {extra}"), users=[0, 5, 9]))


def test_attack_exact_without_defence_and_weaker_with_padding_and_ldp(grouped_cfg):
    from fedmm.factory import data_for

    num_items = data_for(make_config(grouped_cfg)).num_items
    base = _attack(grouped_cfg)
    # 20 positives, 160 sampled negatives over 2 epochs: the changed rows are positives + negatives
    assert base["changed_recall"] == 1.0
    assert base["n_changed"] < num_items - 40  # not the whole catalogue
    assert base["precision"] >= 0.95 and base["recall"] >= 0.95
    padded = _attack(grouped_cfg, "pad-items=40")
    assert padded["n_changed"] == pytest.approx(base["n_changed"] + 40)
    assert padded["precision"] < base["precision"] - 0.1
    noisy = _attack(grouped_cfg, "ldp-delta=1000.0")
    assert noisy["n_changed"] == num_items  # every row changes
    assert noisy["precision_at_n"] < 0.5 and noisy["precision"] < 0.5


def test_pca_sign_attack_on_planted_updates():
    rng = np.random.default_rng(0)
    sent = rng.normal(size=(50, 4))
    direction = np.array([1.0, -2.0, 0.5, 0.0])
    uploaded = sent.copy()
    pos, neg = np.array([3, 7, 11]), np.array([1, 2, 20, 21, 22, 30, 40, 41])
    uploaded[pos] += 2 * direction + 0.01 * rng.normal(size=(3, 4))
    uploaded[neg] -= direction + 0.01 * rng.normal(size=(8, 4))
    g = pca_sign_attack(sent, uploaded)
    assert g.changed.tolist() == sorted([*pos, *neg])
    assert g.predicted.tolist() == pos.tolist()
    assert set(g.ranked[:3].tolist()) == set(pos.tolist())


def _tables(num_items=40, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    sent = rng.normal(size=(num_items, dim)).astype(np.float32)
    trained = sent.copy()
    changed = np.array([1, 4, 7, 9, 12, 15, 30, 33])
    trained[changed] += rng.normal(size=(changed.size, dim)).astype(np.float32)
    return sent, trained, changed


def test_pad_item_updates_rows_counts_and_determinism():
    sent, trained, changed = _tables()
    interacted = np.array([1, 4, 7, 2, 3])  # 2, 3: held-out items, never trained, never padded
    counts = np.zeros(40, np.int64)
    counts[changed] = [2, 2, 2, 1, 1, 1, 1, 2]
    table, padded, new_counts = pad_item_updates(sent, trained, interacted, 10,
                                                 np.random.default_rng(5), counts)
    now = np.flatnonzero(np.any(table != sent, axis=1))
    assert now.tolist() == sorted([*changed, *padded])  # positives + negatives + N padded
    assert padded.size == 10 and not np.isin(padded, [*interacted, *changed]).any()
    assert np.array_equal(table[changed], trained[changed]) and table.dtype == trained.dtype
    assert np.isin(new_counts[padded], [1, 2]).all() and np.array_equal(new_counts[changed], counts[changed])
    again = pad_item_updates(sent, trained, interacted, 10, np.random.default_rng(5), counts)
    assert np.array_equal(again[0], table) and np.array_equal(again[1], padded)
    other = pad_item_updates(sent, trained, interacted, 10, np.random.default_rng(6), counts)
    assert not np.array_equal(other[1], padded)
    # more padding than candidates: every free item is padded, no error
    _, all_free, _ = pad_item_updates(sent, trained, interacted, 1000, np.random.default_rng(0))
    assert all_free.size == 40 - len({*interacted, *changed})
    # 0 = off: the very same table
    same, none, _ = pad_item_updates(sent, trained, interacted, 0, np.random.default_rng(0))
    assert same is trained and none.size == 0
    with pytest.raises(ValueError, match="pad-items"):
        pad_item_updates(sent, trained, interacted, -1, np.random.default_rng(0))


def test_padded_updates_have_the_real_updates_moments():
    rng = np.random.default_rng(1)
    sent = np.zeros((3000, 3))
    trained = sent.copy()
    trained[:200] = rng.normal([1.0, -1.0, 0.0], [0.5, 2.0, 1.0], size=(200, 3))
    table, padded, _ = pad_item_updates(sent, trained, np.arange(0), 2500, np.random.default_rng(2))
    fake, real = table[padded], trained[:200]
    assert np.allclose(fake.mean(0), real.mean(0), atol=0.15)
    assert np.allclose(np.cov(fake.T), np.cov(real.T), atol=0.35)


def _client(**kw) -> FedRecClient:
    import torch

    torch.manual_seed(0)
    ud = UserData(3, np.array([1, 4, 7, 9, 12, 15], dtype=np.int64), 20, 21, 40)
    return FedRecClient(build_model("pfedrec", 40, 8), ud, settings(**kw))


def test_client_pads_non_interacted_rows_before_noise():
    c = _client(**{"pad-items": 5})
    sent = c.get_parameters({})
    up = c.fit(sent, {"server-round": 1, "aggregation": "itemwise"})[0][0]
    counts = c.upload_extras()["item-counts"]
    plain = _client()
    ref = plain.fit(sent, {"server-round": 1, "aggregation": "itemwise"})[0][0]
    ref_counts = plain.upload_extras()["item-counts"]
    changed, ref_changed = (np.flatnonzero(np.any(t != sent[0], axis=1)) for t in (up, ref))
    extra = np.setdiff1d(changed, ref_changed)
    assert extra.size == 5 and not np.isin(extra, [1, 4, 7, 9, 12, 15, 20, 21]).any()
    assert np.array_equal(up[ref_changed], ref[ref_changed])  # real rows untouched by padding
    assert (counts[extra] > 0).all() and counts.sum() > ref_counts.sum()
    with pytest.raises(ConfigError, match="pad-items"):
        settings(**{"pad-items": -1})


def test_ldp_noises_item_counts_and_zero_delta_keeps_them():
    conf = {"server-round": 1, "aggregation": "itemwise"}
    clean = _client()
    clean.fit(clean.get_parameters({}), conf)
    exact = clean.upload_extras()["item-counts"]
    noisy_c = _client(**{"ldp-delta": 2.0})
    noisy_c.fit(noisy_c.get_parameters({}), conf)
    noisy = noisy_c.upload_extras()["item-counts"]
    assert noisy.dtype == np.int64 and (noisy >= 0).all()
    assert (noisy != exact).sum() >= 10  # most of 40 items move at scale 2
    assert (noisy[exact == 0] > 0).any()  # untouched items no longer read as untouched
    assert np.array_equal(noisy_c.upload_extras()["item-counts"], noisy)  # same on every call


def test_count_noise_distribution_and_errors():
    rng = np.random.default_rng(0)
    base = np.full(200_000, 50, np.int64)
    noisy = count_noise(base, 1.0, rng)
    a = np.exp(-1.0)
    assert np.mean(noisy == 50) == pytest.approx((1 - a) / (1 + a), abs=0.01)
    assert abs(np.mean(noisy - 50)) < 0.02  # symmetric far from the clip
    assert count_noise(np.zeros(1000, np.int64), 1.0, rng).min() == 0
    assert count_noise(base, 0.0, rng) is base
    with pytest.raises(TypeError, match="integers"):
        count_noise(np.zeros(3), 1.0, rng)
    with pytest.raises(ValueError, match="ldp-delta"):
        count_noise(base, -1.0, rng)
