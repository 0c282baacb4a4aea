"""server_tasks.averaging.weighted_mean: the one weighted mean gives, bit for bit, what the four
averages it replaces gave (their old bodies are copied below), and matches ``np.average``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from server_tasks.averaging import weighted_mean
from server_tasks.fusion import group_targets
from server_tasks.group_pref import average_state
from strategies.aggregation import itemwise_average, weighted_average


# ----- the replaced code, verbatim ---------------------------------------------------------
def _old_weighted_average(states, weights):
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    out = {}
    for key in states[0]:
        acc = np.zeros(states[0][key].shape, dtype=np.float64)
        for wi, s in zip(w, states):
            acc += wi * s[key]
        out[key] = acc.astype(states[0][key].dtype)
    return out


def _old_itemwise_average(tables, counts, previous):
    c = np.stack([np.asarray(x, dtype=np.float64) for x in counts])
    t = np.stack([np.asarray(x, dtype=np.float64) for x in tables])
    total = c.sum(axis=0)
    summed = np.einsum("cn,cnd->nd", c, t)
    out = previous.astype(np.float64).copy()
    seen = total > 0
    out[seen] = summed[seen] / total[seen, None]
    return out.astype(previous.dtype)


def _old_group_targets(item_tables, labels, w, g):
    stack = np.stack([np.asarray(t, dtype=np.float64) for t in item_tables])
    n, num_items, _ = stack.shape
    w = np.asarray(w, dtype=np.float64)
    if w.shape == (n,):
        w = np.repeat(w[:, None], num_items, 1)
    out = np.full((g, num_items, stack.shape[2]), np.nan)
    for l in np.unique(labels):
        members = labels == l
        wl = w[members]
        total = wl.sum(0)
        wl = np.where(total[None, :] > 0, wl, 1.0)
        out[l] = np.einsum("cn,cnd->nd", wl, stack[members]) / wl.sum(0)[:, None]
    return out.astype(np.float32)


def _old_average_state(states, weights):
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    w = w / w.sum()
    out = {}
    for key in states[0]:
        first = torch.as_tensor(states[0][key])
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for wi, s in zip(w, states):
            acc += float(wi) * torch.as_tensor(s[key]).detach().cpu().to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


@pytest.mark.parametrize("clients", [1, 2, 3, 7, 16])
def test_the_four_averages_are_bit_identical_to_before(clients):
    rng = np.random.default_rng(clients)
    tables = [rng.normal(0, 0.1, (300, 8)).astype(np.float32) for _ in range(clients)]
    examples = rng.integers(1, 200, clients).astype(float)
    counts = rng.poisson(0.7, (clients, 300)).astype(np.int64)
    previous = rng.normal(0, 0.1, (300, 8)).astype(np.float32)
    labels = rng.integers(0, 3, clients)
    for w in (examples, np.ones(clients)):
        states = [{"t": t, "b": t[0, :3].copy()} for t in tables]
        new, old = weighted_average(states, w), _old_weighted_average(states, w)
        for k in old:
            np.testing.assert_array_equal(new[k], old[k])
        np.testing.assert_array_equal(group_targets(tables, labels, w, 3),
                                      _old_group_targets(tables, labels, w, 3))
        torch_states = [{"t": torch.from_numpy(t)} for t in tables]
        assert torch.equal(average_state(torch_states, w)["t"],
                           _old_average_state(torch_states, w)["t"])
    np.testing.assert_array_equal(itemwise_average(tables, counts, previous),
                                  _old_itemwise_average(tables, counts, previous))
    np.testing.assert_array_equal(group_targets(tables, labels, counts, 3),
                                  _old_group_targets(tables, labels, counts, 3))


def test_weighted_mean_is_np_average():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3))
    w = rng.uniform(0.1, 2.0, 4)
    per_item = rng.uniform(0.0, 2.0, (4, 5))
    for divide_last in (False, True):
        np.testing.assert_allclose(weighted_mean(list(x), w, divide_last=divide_last),
                                   np.average(x, axis=0, weights=w), rtol=1e-12)
        got = weighted_mean(list(x), per_item, divide_last=divide_last)
        ref = np.einsum("cn,cnd->nd", per_item, x) / per_item.sum(0)[:, None]
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert np.isnan(weighted_mean(list(x), np.zeros((4, 5)), divide_last=True)).all()
    with pytest.raises(ValueError, match="3 weights for 4 arrays"):
        weighted_mean(list(x), w[:3])
