"""Per-group local optimisers (fedmm/models/optim.py) and the client's use of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clients.base import FedRecClient, LocalSettings
from fedmm.config import ConfigError, RunConfig, load_app_config
from fedmm.data import UserData
from fedmm.models import BACKBONES, build_model
from fedmm.models.optim import GROUPS, GroupedOptimizer, GroupOptim, resolve_optimizers

ROOT = Path(__file__).resolve().parents[1]


def settings(**kw) -> LocalSettings:
    d = load_app_config(ROOT / "pyproject.toml")
    d.update(kw)
    return RunConfig.from_mapping(d).local


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_parameter_is_in_exactly_one_group_with_an_optimizer_and_a_step(name):
    model = build_model(name, 30, 8)
    groups = model.param_groups()
    assert set(groups) == set(GROUPS)
    ids = [id(p) for ps in groups.values() for p in ps]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert [id(p) for p in groups["items"]] == [id(model.item_emb.weight)]
    optims = model.default_optimizers()
    assert {g for g, ps in groups.items() if ps} == set(optims)
    GroupedOptimizer(groups, optims, model.update_steps)  # raises if a group has no step


def test_pfedrec_defaults_are_the_official_two_step_sgd():
    model = build_model("pfedrec", 50, 8)
    optims = model.default_optimizers()
    assert optims["private"] == GroupOptim("sgd", 0.1)
    assert optims["items"] == GroupOptim("sgd", 0.1 * 50 * 80)
    assert model.update_steps == (("private",), ("items",))


def test_two_step_update_uses_a_second_forward_pass():
    """PFedRec: the item step sees the score function already updated by the first step."""
    torch.manual_seed(0)
    model = build_model("pfedrec", 6, 4)
    items, labels = torch.tensor([0, 1, 2]), torch.tensor([1.0, 0.0, 0.0])
    w0, v0 = model.score_fn.weight.detach().clone(), model.item_emb.weight.detach().clone()
    optim = GroupedOptimizer(model.param_groups(), {"private": GroupOptim("sgd", 0.5),
                                                     "items": GroupOptim("sgd", 2.0)}, model.update_steps)
    for groups in optim.steps:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(items), labels)
        optim.zero_grad()
        loss.backward()
        optim.step(groups)
    # Reference by hand: step 1 on the score function, step 2 on the items with the new scorer.
    torch.manual_seed(0)
    ref2 = build_model("pfedrec", 6, 4)
    assert torch.equal(ref2.score_fn.weight, w0) and torch.equal(ref2.item_emb.weight, v0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(ref2(items), labels)
    loss.backward()
    with torch.no_grad():
        ref2.score_fn.weight -= 0.5 * ref2.score_fn.weight.grad
        ref2.score_fn.bias -= 0.5 * ref2.score_fn.bias.grad
    ref2.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(ref2(items), labels)
    loss.backward()
    with torch.no_grad():
        ref2.item_emb.weight -= 2.0 * ref2.item_emb.weight.grad
    assert torch.allclose(model.score_fn.weight, ref2.score_fn.weight)
    assert torch.allclose(model.item_emb.weight, ref2.item_emb.weight, atol=1e-6)
    assert not torch.allclose(model.item_emb.weight, v0)


def test_overrides_replace_only_what_they_name():
    defaults = {"items": GroupOptim("sgd", 100.0), "private": GroupOptim("sgd", 0.1, 1e-6)}
    out = resolve_optimizers(defaults, {"items": ("adam", 0.0), "private": ("", 0.3),
                                        "shared": ("adam", 1.0)})
    assert out == {"items": GroupOptim("adam", 100.0), "private": GroupOptim("sgd", 0.3, 1e-6)}


def test_bad_optimizer_specs_are_named():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        GroupOptim("rmsprop", 0.1)
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        GroupOptim("sgd", 0.0)
    model = build_model("pfedrec", 10, 4)
    with pytest.raises(ValueError, match=r"groups \['items'\] have parameters but no optimizer"):
        GroupedOptimizer(model.param_groups(), {"private": GroupOptim("sgd", 0.1)}, model.update_steps)
    with pytest.raises(ValueError, match="no update step"):
        GroupedOptimizer(model.param_groups(), model.default_optimizers(), (("private",),))
    d = load_app_config(ROOT / "pyproject.toml")
    d["items-optimizer"] = "lbfgs"
    with pytest.raises(ConfigError, match="'items-optimizer' = 'lbfgs'"):
        RunConfig.from_mapping(d)


def test_run_config_override_changes_the_client_update():
    """The same client and data, one round: the item step size follows items-lr."""
    ud = UserData(0, np.array([1, 2, 3], dtype=np.int64), 4, 5, 12)

    def moved(**kw) -> float:
        torch.manual_seed(0)
        c = FedRecClient(build_model("pfedrec", 12, 4), ud, settings(**{"local-epochs": 1, **kw}))
        p0 = c.get_parameters({})
        p1 = c.fit(p0, {"server-round": 1})[0]
        return float(np.abs(p1[0] - p0[0]).max())

    base = moved(**{"items-lr": 1.0})
    assert moved(**{"items-lr": 2.0}) == pytest.approx(2 * base, rel=1e-4)
    assert moved(**{"items-optimizer": "adam", "items-lr": 0.01}) == pytest.approx(0.01, rel=0.05)


def test_group_clip_bounds_the_step():
    """With clip c, one SGD step moves a group by at most lr * c (L2 over the group)."""
    import torch

    from fedmm.models.optim import GroupedOptimizer, GroupOptim

    w = torch.nn.Parameter(torch.zeros(4))
    v = torch.nn.Parameter(torch.zeros(3))
    opt = GroupedOptimizer({"items": [w], "private": [v]},
                           {"items": GroupOptim("sgd", 1.0, clip=0.5), "private": GroupOptim("sgd", 1.0)},
                           [("items", "private")])
    (100.0 * w.sum() + 100.0 * v.sum()).backward()
    opt.step(("items", "private"))
    assert torch.linalg.vector_norm(w).item() == pytest.approx(0.5, rel=1e-5)   # clipped
    assert torch.linalg.vector_norm(v).item() == pytest.approx(100.0 * 3 ** 0.5)  # not clipped
    with pytest.raises(ValueError, match="clip norm must be >= 0"):
        GroupOptim("sgd", 1.0, clip=-1.0)
