"""Tests of the local Amazon Reviews 2023 loader on a tiny fixture in the published format."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedmm.data.amazon import load_amazon2023
from fedmm.data.raw import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "amazon2023"


def test_fixture_loads_with_expected_fields():
    raw = load_amazon2023(FIXTURE, "All_Beauty")
    assert raw.name == "amazon2023-All_Beauty"
    inter = raw.interactions
    assert len(inter) == 8 and inter["user"].nunique() == 4
    assert list(inter.columns) == ["user", "item", "rating", "timestamp"]
    assert inter["timestamp"].dtype == np.int64
    assert inter["timestamp"].iloc[0] == 1588687728  # milliseconds -> seconds
    # items keyed by parent_asin: the variant asin B07PNNCSP9 maps to its parent B097R46CSY
    assert "B07PNNCSP9" not in set(inter["item"]) and "B097R46CSY" in set(inter["item"])
    items = raw.items
    assert set(items.index) == set(inter["item"])  # the never-reviewed item is dropped
    assert "B0000UNREV" not in items.index
    spray = items.loc["B00YQ6X8EO"]
    assert spray["title"].startswith("Herbivore")
    assert spray["year"] == 2015.0
    assert spray["image"] == "https://m.media-amazon.com/images/I/31Z+VeRjz2L.jpg"  # first large
    assert "sea mist" in spray["description"] and "Adds volume" in spray["description"]
    assert spray["genres"] == "All Beauty"  # empty categories -> main_category
    mist = items.loc["B097R46CSY"]
    assert mist["genres"] == "Beauty & Personal Care|Fragrance|Body Sprays"
    assert mist["image"] == ""  # no images
    assert np.isnan(items.loc["B081TJ8YS3", "year"])
    raw.validate("fixture")


@pytest.mark.parametrize("alias", ["Beauty", "all_beauty", "All Beauty"])
def test_beauty_aliases(alias):
    assert load_amazon2023(FIXTURE, alias).name == "amazon2023-All_Beauty"


def test_hub_layout_gzip_and_tools_alias_and_local_image(tmp_path):
    review_dir = tmp_path / "raw" / "review_categories"
    meta_dir = tmp_path / "raw" / "meta_categories"
    review_dir.mkdir(parents=True)
    meta_dir.mkdir(parents=True)
    with gzip.open(review_dir / "Tools_and_Home_Improvement.jsonl.gz", "wt") as fh:
        fh.write((FIXTURE / "All_Beauty.jsonl").read_text())
    shutil.copy(FIXTURE / "meta_All_Beauty.jsonl",
                meta_dir / "meta_Tools_and_Home_Improvement.jsonl")
    (tmp_path / "images").mkdir()
    local = tmp_path / "images" / "B09JS339BZ.jpg"
    local.write_bytes(b"\xff\xd8\xff")  # presence is what counts for the loader
    raw = load_amazon2023(tmp_path, "Tools_and_Home")
    assert raw.name == "amazon2023-Tools_and_Home_Improvement"
    assert len(raw.interactions) == 8
    assert raw.items.loc["B09JS339BZ", "image"] == str(local)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        load_amazon2023(tmp_path, "Office_Products")
    msg = str(err.value)
    assert str(tmp_path / "Office_Products.jsonl") in msg
    assert "cannot be downloaded" in msg and "amazon:" in msg
    shutil.copy(FIXTURE / "All_Beauty.jsonl", tmp_path / "Digital_Music.jsonl")
    with pytest.raises(DataError, match="meta_Digital_Music.jsonl"):
        load_amazon2023(tmp_path, "Digital_Music")
    with pytest.raises(DataError, match="unsupported category"):
        load_amazon2023(tmp_path, "Books")


def test_malformed_lines_and_missing_metadata(tmp_path):
    (tmp_path / "Toys_and_Games.jsonl").write_text('{"rating": 5.0, "user_id": "u"}\n')
    (tmp_path / "meta_Toys_and_Games.jsonl").write_text("")
    with pytest.raises(DataError, match=r"Toys_and_Games.jsonl:1: review lacks keys"):
        load_amazon2023(tmp_path, "Toys_and_Games")
    (tmp_path / "Toys_and_Games.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r":1: not valid JSON"):
        load_amazon2023(tmp_path, "Toys_and_Games")
    shutil.copy(FIXTURE / "All_Beauty.jsonl", tmp_path / "Toys_and_Games.jsonl")
    with pytest.warns(RuntimeWarning, match="6 of 6 reviewed items have no metadata"):
        raw = load_amazon2023(tmp_path, "Toys_and_Games")
    assert (raw.items["title"] == "").all()
