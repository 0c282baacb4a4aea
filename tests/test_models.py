"""Contract tests of the five backbones (tiny sizes, seeded, CPU)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedmm.models import BACKBONES, FedNCF, FedPerGNN, FedRAP, FedRecModel, build_model

NUM_ITEMS = 20
DIM = 8
POSITIVES = [1, 3, 5]
NEGATIVES = [0, 2, 4, 6, 7, 8, 9, 11]

#: Backbone-specific constructor arguments for the tiny sizes above.
KWARGS = {
    "fedncf": {"layers": (2 * DIM, 16, 8)},
    "fedpergnn": {"neighbors": torch.tensor(POSITIVES)},
}

#: The documented shared / private split of every backbone.
EXPECTED_SHARED = {
    "fedmf": {"item_emb.weight"},
    "fedncf": {
        "item_emb.weight",
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.3.weight",
        "mlp.3.bias",
        "output.weight",
        "output.bias",
    },
    "pfedrec": {"item_emb.weight"},
    "fedrap": {"item_emb.weight"},
    "fedpergnn": {
        "item_emb.weight",
        "gnn.proj.weight",
        "gnn.att_src",
        "gnn.att_dst",
        "gnn.out.weight",
        "gnn.out.bias",
    },
}
EXPECTED_PRIVATE = {
    "fedmf": {"user_emb"},
    "fedncf": {"user_emb"},
    "pfedrec": {"score_fn.weight", "score_fn.bias"},
    "fedrap": {"item_local.weight", "score_fn.weight", "score_fn.bias"},
    "fedpergnn": {"user_emb"},
}
EXPECTED_SCORER = {
    "fedmf": {"user_emb"},
    "fedncf": {"user_emb"} | (EXPECTED_SHARED["fedncf"] - {"item_emb.weight"}),
    "pfedrec": {"score_fn.weight", "score_fn.bias"},
    "fedrap": {"score_fn.weight", "score_fn.bias"},
    "fedpergnn": {"user_emb"} | (EXPECTED_SHARED["fedpergnn"] - {"item_emb.weight"}),
}

NAMES = list(BACKBONES)


def make(name: str, seed: int = 0, **extra) -> FedRecModel:
    torch.manual_seed(seed)
    return build_model(name, NUM_ITEMS, DIM, **{**KWARGS.get(name, {}), **extra})


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    items = torch.tensor(POSITIVES + NEGATIVES)
    labels = torch.tensor([1.0] * len(POSITIVES) + [0.0] * len(NEGATIVES))
    return items, labels


def test_registry_lists_the_five_backbones() -> None:
    from fedmm.models import FedMF, FedNCF, FedPerGNN, FedRAP, PFedRec

    expected = {"fedmf": FedMF, "fedncf": FedNCF, "pfedrec": PFedRec, "fedrap": FedRAP,
                "fedpergnn": FedPerGNN}
    assert BACKBONES == expected
    for name, cls in expected.items():
        assert type(build_model(name.upper(), NUM_ITEMS, DIM, **KWARGS.get(name, {}))) is cls


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_finite(name: str) -> None:
    model = make(name)
    items = torch.tensor([0, 4, 4, 19])
    logits = model(items)
    assert logits.shape == (4,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_item_table(name: str) -> None:
    model = make(name)
    items, labels = batch()
    F.binary_cross_entropy_with_logits(model(items), labels).backward()
    grad = model.item_emb.weight.grad
    assert grad is not None
    assert grad[items].abs().sum() > 0
    unused = [i for i in range(NUM_ITEMS) if i not in items.tolist()]
    assert grad[unused].abs().sum() == 0


@pytest.mark.parametrize("name", NAMES)
def test_shared_private_split_is_documented_partition(name: str) -> None:
    model = make(name)
    shared, private = set(model.shared_keys()), set(model.private_keys())
    assert shared.isdisjoint(private)
    assert shared | private == set(model.state_dict())
    assert shared == EXPECTED_SHARED[name]
    assert private == EXPECTED_PRIVATE[name]
    assert set(model.scorer_keys()) == EXPECTED_SCORER[name]
    assert model.shared_keys() == sorted(shared)


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_score_of_item_vectors(name: str) -> None:
    model = make(name).eval()
    items = torch.tensor([2, 7, 13])
    vectors = model.item_vectors(items)
    assert vectors.shape == (3, DIM)
    torch.testing.assert_close(model.score_vectors(vectors), model(items))


@pytest.mark.parametrize("name", NAMES)
def test_full_scores_cover_catalogue(name: str) -> None:
    model = make(name).eval()
    scores = model.full_scores()
    assert scores.shape == (NUM_ITEMS,)
    assert not scores.requires_grad
    torch.testing.assert_close(scores, model(torch.arange(NUM_ITEMS)))


@pytest.mark.parametrize("name", NAMES)
def test_score_vectors_rejects_wrong_width(name: str) -> None:
    model = make(name)
    with pytest.raises(ValueError, match=rf"\(batch, {DIM}\)"):
        model.score_vectors(torch.zeros(3, DIM + 1))


@pytest.mark.parametrize("name", NAMES)
def test_loading_shared_state_changes_only_shared(name: str) -> None:
    mine, other = make(name, seed=0), make(name, seed=1)
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    theirs = other.state_dict()
    mine.load_state_dict({k: theirs[k] for k in other.shared_keys()}, strict=False)
    after = mine.state_dict()
    for key in mine.shared_keys():
        torch.testing.assert_close(after[key], theirs[key])
        assert not torch.equal(after[key], before[key])
    for key in mine.private_keys():
        torch.testing.assert_close(after[key], before[key])


@pytest.mark.parametrize("name", NAMES)
def test_few_adam_steps_reduce_bce(name: str) -> None:
    model = make(name)
    model.set_round(3)
    items, labels = batch()

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(model(items), labels).item()

    start = eval_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(items), labels)
        (loss + model.regularization(items)).backward()
        optimizer.step()
    end = eval_loss()
    assert math.isfinite(end)
    assert end < 0.5 * start


@pytest.mark.parametrize("name", NAMES)
def test_set_round_accepts_any_round(name: str) -> None:
    model = make(name)
    for r in (0, 1, 50):
        model.set_round(r)
        assert model.regularization().shape == ()


# ----- build_model ----------------------------------------------------------------------------
def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'bpr'; choose one of \['fedmf'"):
        build_model("bpr", NUM_ITEMS)


def test_build_model_is_case_insensitive_and_passes_kwargs() -> None:
    model = build_model("FedRAP", NUM_ITEMS, DIM, lambda_=0.3)
    assert isinstance(model, FedRAP) and model.lambda_ == 0.3 and model.dim == DIM


# ----- FedNCF ---------------------------------------------------------------------------------
def test_fedncf_rejects_input_width_mismatch() -> None:
    with pytest.raises(ValueError, match=r"2 \* dim = 16"):
        FedNCF(NUM_ITEMS, DIM, layers=(64, 32))
    with pytest.raises(ValueError, match="non-empty"):
        FedNCF(NUM_ITEMS, DIM, layers=())
    with pytest.raises(ValueError, match="dropout"):
        FedNCF(NUM_ITEMS, DIM, layers=(16, 8), dropout=1.0)


def test_fedncf_default_layers_fit_default_dim() -> None:
    model = FedNCF(NUM_ITEMS)
    assert model.layers == (64, 128, 64) and model.output.in_features == 32 + 64  # GMF + MLP
    assert FedNCF(NUM_ITEMS, gmf=False).output.in_features == 64


def test_fedncf_neumf_reads_the_gmf_product() -> None:
    """With the MLP branch's output weights zeroed, the logit is the GMF term w . (u * v) + b."""
    model = make("fedncf")
    model.eval()
    with torch.no_grad():
        model.output.weight[:, DIM:] = 0.0
    items = torch.tensor([1, 2])
    v = model.item_emb.weight[items]
    expected = (model.user_emb * v) @ model.output.weight[0, :DIM] + model.output.bias
    torch.testing.assert_close(model(items), expected)


# ----- FedRAP ---------------------------------------------------------------------------------
def test_fedrap_item_vectors_are_additive() -> None:
    model = make("fedrap", local_init_std=0.1)
    items = torch.tensor([0, 5])
    expected = model.item_emb.weight[items] + model.item_local.weight[items]
    torch.testing.assert_close(model.item_vectors(items), expected)
    assert torch.count_nonzero(make("fedrap").item_local.weight) == 0


def test_fedrap_regularizer_follows_round_schedule() -> None:
    model = make("fedrap", lambda_=0.2, mu=0.5, max_gap=None, local_init_std=0.5)
    model.set_round(1)
    assert model.regularization().item() == 0.0
    values = []
    for r in (2, 10, 40):
        model.set_round(r)
        factor = math.tanh((r - 1) / 10)
        common, local = model.item_emb.weight, model.item_local.weight
        expected = factor * (-0.2 * (local - common).pow(2).mean() + 0.5 * common.abs().mean())
        value = model.regularization()
        torch.testing.assert_close(value, expected)
        values.append(value.item())
    assert len(set(values)) == 3


def test_fedrap_fixed_schedule_ignores_round() -> None:
    model = make("fedrap", schedule="fixed")
    model.set_round(1)
    first = model.regularization()
    model.set_round(30)
    torch.testing.assert_close(model.regularization(), first)
    assert first.item() != 0.0


def test_fedrap_batch_regularizer_touches_only_batch_rows() -> None:
    model = make("fedrap", local_init_std=0.1)
    model.set_round(20)
    items = torch.tensor([2, 6])
    model.regularization(items).backward()
    for table in (model.item_emb, model.item_local):
        grad = table.weight.grad
        assert grad[items].abs().sum() > 0
        assert grad[[i for i in range(NUM_ITEMS) if i not in (2, 6)]].abs().sum() == 0


def test_fedrap_repulsion_is_bounded_by_max_gap() -> None:
    model = make("fedrap", lambda_=1.0, mu=0.0, schedule="fixed", max_gap=0.5)
    with torch.no_grad():
        model.item_local.weight.fill_(100.0)
    assert model.regularization().item() == pytest.approx(-0.25)
    unbounded = make("fedrap", lambda_=1.0, mu=0.0, schedule="fixed", max_gap=None)
    with torch.no_grad():
        unbounded.item_local.weight.fill_(100.0)
    assert unbounded.regularization().item() < -1000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lambda_": -1.0}, "lambda_"),
        ({"schedule": "cosine"}, "unknown schedule 'cosine'"),
        ({"max_gap": 0.0}, "max_gap"),
        ({"local_init_std": -0.1}, "local_init_std"),
    ],
)
def test_fedrap_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedRAP(NUM_ITEMS, DIM, **kwargs)


# ----- FedPerGNN ------------------------------------------------------------------------------
def test_fedpergnn_neighbours_shape_the_user_vector() -> None:
    model = make("fedpergnn").eval()
    assert "neighbors" not in model.state_dict()
    with_graph = model.full_scores()
    model.set_neighbors(torch.tensor([10, 12, 12]))
    assert model.neighbors.tolist() == [10, 12]
    assert not torch.allclose(model.full_scores(), with_graph)
    lonely = FedPerGNN(NUM_ITEMS, DIM)
    assert lonely.neighbors.numel() == 0
    assert torch.isfinite(lonely.full_scores()).all()


def test_fedpergnn_graph_passes_gradient_to_neighbour_rows() -> None:
    model = make("fedpergnn")
    model(torch.tensor([0])).sum().backward()
    grad = model.item_emb.weight.grad
    assert grad[POSITIVES].abs().sum() > 0  # via the attention over neighbours
    assert grad[[2, 4, 19]].abs().sum() == 0
    assert model.gnn.att_src.grad is not None and model.user_emb.grad is not None


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([0.5, 1.0]), "integer"),
        (torch.tensor([[1, 2]]), "1-D"),
        (torch.tensor([3, NUM_ITEMS]), r"\[0, 20\)"),
        (torch.tensor([-1]), r"\[0, 20\)"),
    ],
)
def test_fedpergnn_rejects_bad_neighbours(bad: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedPerGNN(NUM_ITEMS, DIM, neighbors=bad)
