from __future__ import annotations

import numpy as np
import pytest

from strategies.aggregation import (ReplyError, better, check_reply_arrays, itemwise_average,
                                    mean_metrics, weighted_average)


def test_weighted_average_matches_numpy():
    rng = np.random.default_rng(0)
    states = [{"a": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=2)} for _ in range(5)]
    w = [1, 2, 3, 4, 0]
    out = weighted_average(states, w)
    ref = np.average(np.stack([s["a"] for s in states]), axis=0, weights=w)
    assert np.allclose(out["a"], ref, atol=1e-6) and out["a"].dtype == np.float32
    with pytest.raises(ReplyError):
        weighted_average(states, [0] * 5)
    with pytest.raises(ReplyError):
        weighted_average([], [])


def test_itemwise_average_keeps_untouched_rows():
    prev = np.full((3, 2), 9.0)
    t1, t2 = np.ones((3, 2)), np.full((3, 2), 3.0)
    c1, c2 = np.array([1, 0, 0]), np.array([3, 1, 0])
    out = itemwise_average([t1, t2], [c1, c2], prev)
    assert np.allclose(out[0], (1 * 1 + 3 * 3) / 4) and np.allclose(out[1], 3.0)
    assert np.allclose(out[2], 9.0)


def test_check_reply_arrays_errors():
    ref = {"x": np.zeros((2, 2))}
    check_reply_arrays([{"x": np.ones((2, 2))}], ref, ["n1"])
    with pytest.raises(ReplyError, match="n2.*missing"):
        check_reply_arrays([{"y": np.ones((2, 2))}], ref, ["n2"])
    with pytest.raises(ReplyError, match="shape"):
        check_reply_arrays([{"x": np.ones(3)}], ref, ["n3"])
    with pytest.raises(ReplyError, match="NaN"):
        check_reply_arrays([{"x": np.full((2, 2), np.nan)}], ref, ["n4"])


def test_mean_metrics_and_better():
    m = mean_metrics([{"a": 1.0, "n": 1}, {"a": 3.0, "n": 1}], weights=[1, 3], skip=("n",))
    assert m == {"a": 2.5}
    assert better(0.1, None) and better(0.2, 0.1) and not better(0.1, 0.1)
