"""server_tasks.item_text: the one item-text recipe and genre rule write what the three recipes
and four genre rules they replace wrote (copied below as they were)."""
from __future__ import annotations

import importlib.util
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from server_tasks.item_text import FEDSLLM_TEXT, GFMFR_TEXT, item_texts, split_genres
from server_tasks.kg_encoder import kg_meta_tokens
from server_tasks.prototypes.prompts import _genre_counts


# ----- the replaced code, verbatim ---------------------------------------------------------
def _old_fedsllm_texts(items):
    out = []
    for title, year, genres, desc in zip(items["title"].fillna("").astype(str),
                                         pd.to_numeric(items["year"], errors="coerce"),
                                         items["genres"].fillna("").astype(str),
                                         items["description"].fillna("").astype(str)):
        parts = [title.strip()] if title.strip() else []
        if math.isfinite(year) and year > 0:
            parts.append(f"Year: {int(year)}")
        names = [g.strip() for g in genres.split("|")
                 if g.strip() and g.strip().lower() not in ("unknown", "(no genres listed)")]
        if names:
            parts.append("Genres: " + ", ".join(names))
        if desc.strip():
            parts.append(desc.strip())
        out.append(". ".join(parts))
    return out


def _old_gfmfr_texts(items):
    def describe(genres, year, desc):
        parts = []
        if isinstance(genres, str) and genres.strip():
            parts.append(", ".join(g.strip() for g in genres.split("|") if g.strip()))
        try:
            y = float(year)
        except (TypeError, ValueError):
            y = float("nan")
        if math.isfinite(y) and y > 0:
            parts.append(f"Released {int(y)}")
        if isinstance(desc, str) and desc.strip():
            parts.append(desc.strip())
        return ". ".join(parts)

    view = items.copy()
    view["description"] = [describe(g, y, d) for g, y, d in
                           zip(items["genres"], items["year"], items["description"])]
    titles = view["title"].fillna("").astype(str).str.strip().tolist()
    descs = view["description"].fillna("").astype(str).str.strip().tolist()
    return [f"{t}. {d}" if t and d else (t or d) for t, d in zip(titles, descs)]


def _old_genre_counts(items):
    ignored = frozenset({"", "unknown", "(no genres listed)", "none", "nan"})
    counts = Counter()
    for value in items["genres"].fillna("").astype(str):
        for genre in {g.strip() for g in value.split("|")}:
            if genre.lower() not in ignored:
                counts[genre] += 1
    return counts


def _old_kg_genre_tokens(items):
    return [[f"genre:{g.strip()}" for g in genres.split("|") if g.strip()]
            if isinstance(genres, str) else [] for genres in items["genres"].tolist()]


# ----- tables ------------------------------------------------------------------------------
def _tricky_items():
    return pd.DataFrame({
        "title": ["Heat", "  Spaced  ", "", np.nan, "Alien", "Solo", "M", "Up"],
        "year": [1995.0, np.nan, 2001.0, 0.0, -3.0, 1977.0, np.nan, 2009.0],
        "genres": ["Action| Crime |Thriller", "unknown", "(no genres listed)|Drama", np.nan, "",
                   "Sci-Fi||Sci-Fi", "UNKNOWN|Comedy", " Animation "],
        "description": ["", " a heist ", np.nan, "x", "In space.", "", "", "balloons"],
    })


def _ml100k_items():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole (ML-100K files) not installed")
    from fedmm.data.loaders import load_ml100k

    return load_ml100k().items.reset_index(drop=True)


@pytest.mark.parametrize("table", ["tricky", "ml-100k"])
def test_one_recipe_writes_what_the_old_recipes_wrote(table):
    items = _tricky_items() if table == "tricky" else _ml100k_items()
    assert item_texts(items, FEDSLLM_TEXT) == _old_fedsllm_texts(items)
    assert item_texts(items, GFMFR_TEXT) == _old_gfmfr_texts(items)
    assert _genre_counts(items) == _old_genre_counts(items)
    assert [[t for t in toks if t.startswith("genre:")] for toks in kg_meta_tokens(items, None)] \
        == _old_kg_genre_tokens(items)


def test_where_the_one_genre_rule_differs_from_the_old_rules():
    """FedSLLM's texts now also drop "none"/"nan" labels, as its prompts already did; GFMFR no
    longer writes an empty part for a genres cell without any label."""
    items = pd.DataFrame({"title": ["A", "B"], "year": [1990.0, 1991.0],
                          "genres": ["None|Drama", " | "], "description": ["", ""]})
    assert _old_fedsllm_texts(items)[0] == "A. Year: 1990. Genres: None, Drama"
    assert item_texts(items, FEDSLLM_TEXT)[0] == "A. Year: 1990. Genres: Drama"
    assert _old_gfmfr_texts(items)[1] == "B. . Released 1991"
    assert item_texts(items, GFMFR_TEXT)[1] == "B. Released 1991"
    assert split_genres("Drama|nan| |Unknown") == ["Drama"]
    assert split_genres("Drama|nan| |Unknown", ignored=frozenset()) == ["Drama", "nan", "Unknown"]
    assert split_genres(float("nan")) == []
