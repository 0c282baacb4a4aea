"""fedmm/protocol.py: reply arrays are read as views of the reply's bytes, equal to Flower's
own ``Array.numpy()``."""
from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedmm.protocol import (ARRAYS, EXTRAS, METRICS, NUM_EXAMPLES, TrainReply, array_view,
                            arrays_to_dict)

CASES = [np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32),
         np.asfortranarray(np.arange(12.0).reshape(3, 4)),
         np.zeros((0, 5), np.int64),
         np.array(3.5),
         np.array([True, False, True]),
         np.arange(10)[::3],
         np.arange(6, dtype=">i4").reshape(2, 3)]


@pytest.mark.parametrize("x", CASES, ids=lambda x: f"{x.dtype}{x.shape}")
def test_array_view_equals_flower_numpy_without_copying(x):
    arr = Array(x)
    ref, view = arr.numpy(), array_view(arr)
    assert view.dtype == ref.dtype and view.shape == ref.shape
    assert np.array_equal(view, ref) and view.tobytes(order="A") == ref.tobytes(order="A")
    assert view.flags.f_contiguous == ref.flags.f_contiguous
    assert not view.flags.writeable
    if view.size:
        assert np.shares_memory(view, np.frombuffer(arr.data, np.uint8))
        with pytest.raises(ValueError):
            view[(0,) * view.ndim] = 0


def test_arrays_to_dict_copies_unless_told_not_to():
    rec = ArrayRecord({"a": Array(CASES[0]), "b": Array(CASES[1])})
    copies, views = arrays_to_dict(rec), arrays_to_dict(rec, copy=False)
    assert all(copies[k].flags.writeable and not views[k].flags.writeable for k in rec)
    assert all(np.array_equal(copies[k], views[k]) for k in rec)


@pytest.mark.usefixtures("serverapp_identity")
def test_train_reply_arrays_are_views_of_the_reply():
    table = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    content = RecordDict({ARRAYS: ArrayRecord({"item_emb.weight": Array(table)}),
                          EXTRAS: ArrayRecord({"item-counts": Array(np.arange(20.0))}),
                          METRICS: MetricRecord({NUM_EXAMPLES: 5, "train-loss": 0.5})})
    msg = Message(content=content, dst_node_id=7, message_type="train")
    reply = TrainReply.parse(msg, user=3)
    stored = content[ARRAYS]["item_emb.weight"]
    assert np.array_equal(reply.arrays["item_emb.weight"], table)
    assert np.shares_memory(reply.arrays["item_emb.weight"], np.frombuffer(stored.data, np.uint8))
    assert np.array_equal(reply.extras["item-counts"], np.arange(20.0))
    assert reply.num_examples == 5.0 and reply.metrics["train-loss"] == 0.5
