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


# ----- the "groups" trainer: the backbone's own update steps and per-group optimisers -------
from fedmm.config import BACKBONE_CHOICES  # noqa: E402
from fedmm.models.optim import GroupedOptimizer  # noqa: E402
from fedmm.reference import private_optimizers  # noqa: E402


def _grouped(tmp_path, sizes=(16, 8, 8, 8)):
    d = write_grouped_grouplens(tmp_path / "gl", sizes=sizes)
    return load_federated(f"grouplens:{d}", 0.0, 3, str(tmp_path / "cache"))


def _builder(data, backbone, dim=8):
    def build(u):
        torch.manual_seed(u)
        m = build_model(backbone, data.num_items, dim)
        if hasattr(m, "set_neighbors"):
            m.set_neighbors(torch.as_tensor(data.user(u).train))
        return m
    return build


@pytest.mark.parametrize("backbone", BACKBONE_CHOICES)
def test_groups_trainer_runs_for_every_backbone(tmp_path, backbone):
    data = _grouped(tmp_path)
    row = centralised(data, _builder(data, backbone), CentralSettings(epochs=2, eval_every=1), seed=0,
                      topk=(10,), protocols=("full",), select_metric="valid_full_hr@10")
    assert row["best_epoch"] in (1, 2)
    assert all(np.isfinite(v) for v in row["test"].values())


@pytest.mark.parametrize("backbone", BACKBONE_CHOICES)
def test_groups_trainer_steps_each_group_with_its_own_optimiser(tmp_path, backbone, monkeypatch):
    """With the ``private`` group's lr overridden to 1e-30 its parameters do not move while
    every other group's do (one Adam over everything would move them all), and each update
    step steps exactly its own groups: the shared optimiser, then every user's private one."""
    data = _grouped(tmp_path)
    build = _builder(data, backbone)
    calls: list[tuple[str, ...]] = []
    orig = GroupedOptimizer.step
    monkeypatch.setattr(GroupedOptimizer, "step", lambda self, g: (calls.append(tuple(g)), orig(self, g))[1])
    built: list = []
    before: dict = {}

    def keep(u):
        m = build(u)
        if u == 0:
            before.update({n: p.detach().clone() for n, p in m.named_parameters()})
        built.append(m)
        return m

    settings = CentralSettings(epochs=1, users_per_step=data.num_users,
                               overrides=(("private", "sgd", 1e-30),))
    centralised(data, keep, settings, seed=0, topk=(10,), protocols=("full",),
                select_metric="valid_full_hr@10")
    model = built[0]
    groups = model.param_groups()
    assert groups["private"]
    for name, p in model.named_parameters():
        g = next(g for g, ps in groups.items() if any(p is q for q in ps))
        moved = not torch.equal(before[name], p.detach())
        assert moved == (g != "private"), (g, name, moved)
    privates = private_optimizers(model)
    expected: list = []
    for step in model.update_steps:
        expected.append(tuple(g for g in step if g in ("items", "shared") and groups[g]))
        expected += [tuple(g for g in step if g in privates)] * data.num_users
    assert calls == expected


def test_groups_trainer_follows_pfedrec_update_steps(tmp_path, monkeypatch):
    """PFedRec: the score function is stepped on a first pass, the item table on a second."""
    data = _grouped(tmp_path)
    calls: list = []
    orig = GroupedOptimizer.step
    monkeypatch.setattr(GroupedOptimizer, "step", lambda self, g: (calls.append(tuple(g)), orig(self, g))[1])
    centralised(data, _builder(data, "pfedrec"), CentralSettings(epochs=1, users_per_step=data.num_users),
                seed=0, topk=(10,), protocols=("full",), select_metric="valid_full_hr@10")
    assert calls == [()] + [("private",)] * data.num_users + [("items",)] + [()] * data.num_users


@pytest.mark.parametrize("backbone", BACKBONE_CHOICES)
def test_groups_trainer_beats_mostpop_on_grouped_data(tmp_path, backbone):
    data = _grouped(tmp_path)
    row = centralised(data, _builder(data, backbone), CentralSettings(epochs=60, lr=0.05, eval_every=20),
                      seed=0, topk=(10,), protocols=("full",), select_metric="valid_full_hr@10")
    floor = mostpop(data, 0, (10,), ("full",))
    assert row["test"]["full_hr@10"] > floor["test_full_hr@10"] + 0.2, (row["test"], floor)


def test_adam_trainer_is_kept(tmp_path):
    """``trainer="adam"`` (one Adam over everything) and ``"groups"`` train differently: the
    user vector moves by Adam's step (about lr per entry) under one, by SGD under the other."""
    data = _grouped(tmp_path)
    moved = {}
    for trainer in ("adam", "groups"):
        built: list = []
        build = _builder(data, "fedmf")
        first = build(0).user_emb.detach().clone()
        centralised(data, lambda u: built.append(build(u)) or built[-1],
                    CentralSettings(epochs=1, lr=0.01, trainer=trainer), seed=0, topk=(10,),
                    protocols=("full",), select_metric="valid_full_hr@10")
        moved[trainer] = (built[0].user_emb.detach() - first).abs()
    assert torch.allclose(moved["adam"], torch.full_like(moved["adam"], 0.01), rtol=1e-3)
    assert not torch.allclose(moved["groups"], moved["adam"])
    with pytest.raises(ValueError, match="trainer"):
        CentralSettings(trainer="sgd")


def test_reference_rows_best_picks_the_validation_better_trainer_and_caches_each(tmp_path, monkeypatch):
    from pathlib import Path

    import fedmm.reference as reference
    from fedmm.config import RunConfig, load_app_config

    d = write_grouped_grouplens(tmp_path / "gl")
    raw = load_app_config(Path(__file__).resolve().parents[1] / "pyproject.toml")
    raw.update({"dataset": f"grouplens:{d}", "rating-threshold": 0.0, "cache-dir": str(tmp_path / "cache"),
                "backbone": "fedmf", "embedding-dim": 8, "centralised-epochs": 2,
                "centralised-trainer": "best"})
    cfg = RunConfig.from_mapping(raw)
    data = load_federated(cfg.dataset, cfg.rating_threshold, cfg.min_interactions, cfg.cache_dir, cfg.split_ties)
    trained: list[str] = []
    valid = {"groups": 0.3, "adam": 0.6}

    def fake(data, build, settings, seed, topk, protocols, select_metric, *args, **kw):
        trained.append(settings.trainer)
        m = {"sampled_ndcg@10": valid[settings.trainer]}
        return {"best_epoch": 2, "test": {"x": settings.trainer}, "valid": m, "seconds": 0.0}

    monkeypatch.setattr(reference, "centralised", fake)
    row = reference.reference_rows(cfg, data)["centralised"]
    assert trained == ["groups", "adam"]
    assert row["trainer"] == "adam" and row["test"] == {"x": "adam"}
    assert row["candidates"] == {"groups": {"best_epoch": 2, "valid": 0.3},
                                 "adam": {"best_epoch": 2, "valid": 0.6}}
    assert len(list((tmp_path / "cache" / "reference").glob("*.json"))) == 2  # one per trainer
    # Cached: no training the second time; a single trainer reads its own entry.
    assert reference.reference_rows(cfg, data)["centralised"]["trainer"] == "adam" and len(trained) == 2
    one = RunConfig.from_mapping({**raw, "centralised-trainer": "groups"})
    assert reference.reference_rows(one, data)["centralised"]["test"] == {"x": "groups"}
    assert len(trained) == 2
    # The groups entry depends on the private groups' optimisers: an override trains anew.
    other = RunConfig.from_mapping({**raw, "centralised-trainer": "groups", "private-lr": 0.5})
    reference.reference_rows(other, data)
    assert trained == ["groups", "adam", "groups"]
