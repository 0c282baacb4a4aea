"""Floor and ceiling rows (fedmm/reference.py): MostPop by hand, centralised training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_grouped_grouplens
from fedmm.data.split import FederatedData, load_federated
from fedmm.models import build_model
from fedmm.reference import CentralSettings, centralised, mostpop, popularity, share_modules


def hand_data() -> FederatedData:
    """3 users, 6 items. Training: u0 {0, 1}, u1 {0, 2}, u2 {0, 1}; popularity 3, 2, 1, 0, 0, 0."""
    ptr = np.array([0, 2, 4, 6])
    train = np.array([0, 1, 0, 2, 0, 1])
    valid, test = np.array([2, 1, 3]), np.array([3, 4, 2])
    return FederatedData("hand", 3, 6, ptr, train, valid, test, np.array(["a", "b", "c"]),
                         np.array(list("uvwxyz")))


def test_mostpop_by_hand():
    data = hand_data()
    assert popularity(data).tolist() == [3, 2, 1, 0, 0, 0]
    m = mostpop(data, seed=0, topk=(1,), protocols=("full",))
    # Full ranking, training items excluded, ties pessimistic:
    # u0 valid 2 (pop 1): only 2..5 left, 2 is first -> hit; test 3 (pop 0) ties 4, 5 -> miss.
    # u1 valid 1 (pop 2): first -> hit; test 4 (pop 0), valid 1 excluded, item 3/5 tie -> miss.
    # u2 valid 3 (pop 0): item 2 (pop 1) ahead -> miss; test 2 (pop 1): first -> hit.
    assert m["valid_full_hr@1"] == pytest.approx(2 / 3)
    assert m["test_full_hr@1"] == pytest.approx(1 / 3)


def test_share_modules_ties_shared_parts_only():
    models = [build_model("fedncf", 10, 4) for _ in range(3)]
    share_modules(models)
    assert models[2].item_emb is models[0].item_emb and models[1].mlp is models[0].mlp
    assert models[1].user_emb is not models[0].user_emb


def test_centralised_ceiling_beats_mostpop_on_grouped_data(tmp_path):
    d = write_grouped_grouplens(tmp_path / "gl")
    data = load_federated(f"grouplens:{d}", 0.0, 3, str(tmp_path / "cache"))

    def build(u):
        torch.manual_seed(u)
        return build_model("fedmf", data.num_items, 8)

    row = centralised(data, build, CentralSettings(epochs=30, lr=0.05, eval_every=10), seed=0,
                      topk=(10,), protocols=("full",), select_metric="valid_full_hr@10")
    floor = mostpop(data, 0, (10,), ("full",))
    assert row["best_epoch"] in (10, 20, 30)
    assert row["test"]["full_hr@10"] > floor["test_full_hr@10"] + 0.2
