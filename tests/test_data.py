from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmm.data import DataError, RawData, build_split, load_federated, load_item_side
from fedmm.data.loaders import load_grouplens, load_raw
from fedmm.data.sampling import eval_negatives, sample_negatives


def _raw(rows, name="t"):
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    items = pd.DataFrame({"title": [f"t{i}" for i in sorted(set(df.item))], "year": np.nan,
                          "genres": "", "description": "", "image": ""},
                         index=pd.Index(sorted(set(df.item)), name="item"))
    return RawData(name, df, items, None)


def test_leave_one_out_by_timestamp_no_leakage():
    rows = [("a", "1", 5, 30), ("a", "2", 4, 10), ("a", "3", 3, 20), ("a", "4", 4, 40),
            ("b", "2", 5, 5), ("b", "4", 1, 1), ("b", "1", 2, 3)]
    data, side = build_split(_raw(rows), rating_threshold=0.0, min_interactions=3)
    assert data.num_users == 2 and data.num_items == 4
    a = data.user(0)  # user "a": order by time 2(10),3(20),1(30),4(40)
    ids = data.item_ids
    assert ids[a.test] == "4" and ids[a.valid] == "1"
    assert [ids[i] for i in a.train] == ["2", "3"]
    b = data.user(1)  # user "b": 4(1), 1(3), 2(5)
    assert ids[b.test] == "2" and ids[b.valid] == "1" and [ids[i] for i in b.train] == ["4"]
    for u in range(data.num_users):
        ud = data.user(u)
        assert ud.test not in ud.train and ud.valid not in ud.train and ud.valid != ud.test
    assert list(side.items["raw_id"]) == list(ids)


def test_equal_timestamps_are_ordered_by_the_tie_rule():
    # user "a" rated items 3, 1 and 2 in one second (in that file order) after item 4, and item
    # 5 in that same second, last in the file; user "b": items 2 and 1 at one time after 3.
    rows = [("a", "4", 5, 1), ("a", "3", 5, 9), ("b", "3", 4, 1), ("a", "1", 4, 9),
            ("b", "2", 4, 7), ("a", "2", 3, 9), ("b", "1", 2, 7), ("a", "5", 3, 9)]
    ids = lambda d, u: (d.item_ids[d.user(u).valid], d.item_ids[d.user(u).test])  # noqa: E731
    by_file, _ = build_split(_raw(rows), 0.0, 3)                       # default: file-order
    assert ids(by_file, 0) == ("2", "5") and ids(by_file, 1) == ("2", "1")
    assert [by_file.item_ids[i] for i in by_file.user(0).train] == ["4", "3", "1"]
    by_id, _ = build_split(_raw(rows), 0.0, 3, ties="item-id")
    assert ids(by_id, 0) == ("3", "5") and ids(by_id, 1) == ("1", "2")
    assert [by_id.item_ids[i] for i in by_id.user(0).train] == ["4", "1", "2"]
    with pytest.raises(ValueError, match="ties='random'"):
        build_split(_raw(rows), 0.0, 3, ties="random")


def test_split_cache_is_keyed_by_the_tie_rule(tmp_path):
    d = tmp_path / "gl"
    d.mkdir()
    (d / "u.data").write_text("".join(f"1\t{i}\t5\t100\n" for i in (3, 1, 2, 4)))
    flags = "|".join(["0"] * 19)
    (d / "u.item").write_text("".join(f"{i}|Movie {i} (1990)|01-Jan-1990||x|{flags}\n" for i in range(1, 5)))
    ds, cache = f"grouplens:{d}", str(tmp_path / "c")
    a = load_federated(ds, 0.0, 3, cache, "file-order")
    b = load_federated(ds, 0.0, 3, cache, "item-id")
    assert (a.item_ids[a.test[0]], b.item_ids[b.test[0]]) == ("4", "4")
    assert (a.item_ids[a.valid[0]], b.item_ids[b.valid[0]]) == ("2", "3")
    assert len(list((tmp_path / "c" / "splits").glob("*.npz"))) == 2


def test_threshold_and_min_interactions_filter():
    rows = [("a", "1", 5, 1), ("a", "2", 4, 2), ("a", "3", 3, 3), ("b", "1", 5, 1), ("b", "2", 5, 2)]
    data, _ = build_split(_raw(rows), rating_threshold=0.0, min_interactions=3)
    assert data.num_users == 1  # b has only 2
    with pytest.raises(DataError, match="rating-threshold"):
        build_split(_raw(rows), rating_threshold=4.5, min_interactions=3)


def test_unknown_user_partition_error():
    rows = [("a", str(i), 5, i) for i in range(4)]
    data, _ = build_split(_raw(rows), 0.0, 3)
    with pytest.raises(DataError, match="num-supernodes"):
        data.user(5)


def test_grouplens_loader_and_cache(tiny_grouplens, tmp_path):
    raw = load_grouplens(tiny_grouplens)
    assert raw.items.loc["4", "title"] == "Movie 4" and raw.items.loc["4", "year"] == 1994
    assert raw.items.loc["4", "genres"] == "Adventure"
    ds = f"grouplens:{tiny_grouplens}"
    d1 = load_federated(ds, 0.0, 3, str(tmp_path / "c"))
    files = list((tmp_path / "c" / "splits").glob("*.npz"))
    assert len(files) == 1
    load_federated.cache_clear()
    d2 = load_federated(ds, 0.0, 3, str(tmp_path / "c"))
    assert np.array_equal(d1.train_items, d2.train_items) and d1.num_items == d2.num_items
    side = load_item_side(ds, 0.0, 3, str(tmp_path / "c"))
    assert len(side.items) == d1.num_items


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_raw("nope")
    with pytest.raises(DataError, match="directory not found"):
        load_raw(f"grouplens:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither u.data"):
        load_raw(f"grouplens:{tmp_path / 'empty'}")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "u.data").write_text("1\t2\t5\t100\n")
    (bad / "u.item").write_text("2|only|three\n")
    with pytest.raises(DataError, match="u.item"):
        load_raw(f"grouplens:{bad}")


def test_real_ml100k_loader():
    raw = load_raw("ml-100k")
    assert len(raw.interactions) == 100_000
    assert raw.interactions["user"].nunique() == 943 and len(raw.items) == 1682
    assert raw.kg is not None and raw.kg["item"].nunique() > 1500
    data, side = build_split(raw, 0.0, 3)
    assert (data.num_users, data.num_items) == (943, 1682)
    assert data.num_train == 100_000 - 2 * 943
    assert side.kg is not None and side.kg["item"].between(0, 1681).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negative_sampling_never_returns_a_positive(seed):
    rng = np.random.default_rng(seed)
    positives = rng.choice(50, size=30, replace=False)
    negs = sample_negatives(50, positives, 5000, rng)
    assert negs.dtype == np.int64 and not np.isin(negs, positives).any()
    assert set(negs.tolist()) == set(range(50)) - set(positives.tolist())


def test_eval_negatives_fixed_distinct_and_unseen():
    interacted = np.array([0, 3, 4, 9])
    a = eval_negatives(7, 20, interacted, 10, seed=1)
    b = eval_negatives(7, 20, interacted, 10, seed=1)
    c = eval_negatives(7, 20, interacted, 10, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(set(a.tolist())) == 10 and not np.isin(a, interacted).any()
    assert eval_negatives(7, 20, interacted, 99, seed=1).size == 16  # capped by what exists


GOOD_ITEM = "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n"


@pytest.mark.parametrize("u_data, u_item, message", [
    ("1\t2\t5\n", GOOD_ITEM, r"u.data: expected 4 '\\t'-separated columns .*found 3"),
    ("1,2,5,100\n", GOOD_ITEM, r"u.data: expected 4 .*found 1 \(the first line looks ','-separated\)"),
    ("", GOOD_ITEM, r"u.data: the file is empty"),
    ("1\t2\t5\t100\n", "", r"u.item: the file is empty"),
    ("1\t2\t5\t100\n", GOOD_ITEM.replace("|1\n", "|yes\n"),
     r"u.item: genre flag 'Western' of movie '1' \(line 1\) is 'yes'; genre flags must be 0 or 1"),
])
def test_malformed_grouplens_files_get_a_clear_error(tmp_path, u_data, u_item, message):
    (tmp_path / "u.data").write_text(u_data)
    (tmp_path / "u.item").write_text(u_item)
    with pytest.raises(DataError, match=message):
        load_raw(f"grouplens:{tmp_path}")


def test_a_client_on_a_cached_split_does_not_import_pandas(tmp_path):
    """pandas is needed to build a split, not to use a cached one: a client process (ClientApp,
    its user's client) stays without it (~33 MiB and ~0.24 s of import per client actor)."""
    import subprocess
    import sys

    from conftest import write_tiny_grouplens

    data_dir = write_tiny_grouplens(tmp_path / "gl")
    cache = tmp_path / "cache"
    load_federated(f"grouplens:{data_dir}", 0.0, 3, str(cache))   # builds and caches the split
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import fedmm.client_app\n"
        "from fedmm.config import RunConfig, load_app_config\n"
        "from fedmm.factory import build_client\n"
        "rc = load_app_config(Path('pyproject.toml'))\n"
        f"rc.update({{'dataset': 'grouplens:{data_dir}', 'cache-dir': '{cache}', "
        "'rating-threshold': 0.0, 'min-interactions': 3})\n"
        "client = build_client(RunConfig.from_mapping(rc), 1)\n"
        "client.evaluate(client.get_parameters({}), {})\n"
        "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False", out.stderr
