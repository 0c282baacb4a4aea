"""Item texts: the one recipe for the text an item's encoder reads, and the one genre rule.

Both methods embed a short text per item with a frozen text encoder
(:func:`server_tasks.text_encoder.encode_texts`): FedSLLM as ``x_i = F_PLM(a_i)`` before its
autoencoder, GFMFR as its text modality ``E_text``. They write the same facts (title, release
year, genres, description) in a different order and wording; :class:`ItemTextRecipe` says which,
:func:`item_texts` writes them, and :func:`split_genres` is the rule every genre reader (the
texts, the LLM prompts, the knowledge/metadata tokens) applies to a ``genres`` cell.

No Flower import here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

#: Genre labels that carry no meaning (compared in lower case); empty labels are always dropped.
IGNORED_GENRES = frozenset({"unknown", "(no genres listed)", "none", "nan"})
#: Parts an item text can be made of (columns of ``fedmm.data.raw.ITEM_COLUMNS``).
TEXT_PARTS = ("title", "year", "genres", "description")


def split_genres(cell, ignored: frozenset[str] = IGNORED_GENRES) -> list[str]:
    """Genre labels of one ``|``-separated ``genres`` cell.

    Parameters
    ----------
    cell : str or object
        The cell, e.g. ``"Action|Adventure"``; anything that is not a str (NaN) has no genres.
    ignored : frozenset of str, default :data:`IGNORED_GENRES`
        Labels dropped, compared in lower case (``frozenset()`` keeps every non-empty label).

    Returns
    -------
    list of str
        Stripped labels in cell order (duplicates kept); empty and ignored labels dropped.
    """
    if not isinstance(cell, str):
        return []
    labels = (part.strip() for part in cell.split("|"))
    return [g for g in labels if g and g.lower() not in ignored]


@dataclass(frozen=True)
class ItemTextRecipe:
    """Which facts an item text holds, in which order and wording.

    Attributes
    ----------
    parts : tuple of str, default ``("title", "year", "genres", "description")``
        Subset of :data:`TEXT_PARTS`, in text order; missing facts are left out.
    year_format : str, default ``"Year: {}"``
        Format of a known release year (``int``); unknown (NaN, non-positive) years are left out.
    genres_format : str, default ``"Genres: {}"``
        Format of the genre labels joined with ``", "``; no labels, no part.
    ignored_genres : frozenset of str, default :data:`IGNORED_GENRES`
        Passed to :func:`split_genres`.
    """

    parts: tuple[str, ...] = TEXT_PARTS
    year_format: str = "Year: {}"
    genres_format: str = "Genres: {}"
    ignored_genres: frozenset[str] = IGNORED_GENRES

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in TEXT_PARTS]
        if unknown or not self.parts:
            raise ValueError(f"recipe parts must be a non-empty subset of {TEXT_PARTS}, got "
                             f"{self.parts}")


#: FedSLLM's ``a_i``: ``"<title>. Year: <year>. Genres: <g1>, <g2>. <description>"``.
FEDSLLM_TEXT = ItemTextRecipe()
#: GFMFR's text modality: ``"<title>. <g1>, <g2>. Released <year>. <description>"``, every
#: non-empty genre label kept (the cached MovieLens-100K tables embed its ``unknown`` genre).
GFMFR_TEXT = ItemTextRecipe(parts=("title", "genres", "year", "description"),
                            year_format="Released {}", genres_format="{}",
                            ignored_genres=frozenset())


def item_texts(items: pd.DataFrame, recipe: ItemTextRecipe = FEDSLLM_TEXT) -> list[str]:
    """One text per item: the recipe's non-empty parts joined with ``". "``.

    Parameters
    ----------
    items : pandas.DataFrame
        One row per internal item index with the columns the recipe's parts name: ``title``,
        ``year`` (float, NaN if unknown), ``genres`` (``|``-separated), ``description`` (see
        ``fedmm.data.raw.ITEM_COLUMNS``).
    recipe : ItemTextRecipe, default :data:`FEDSLLM_TEXT`

    Returns
    -------
    list of str
        One string per row, in row order; ``""`` for an item without any part.

    Raises
    ------
    ValueError
        ``items`` lacks a column the recipe needs.
    """
    missing = [c for c in recipe.parts if c not in items.columns]
    if missing:
        raise ValueError(f"item table lacks columns {missing}; expected those of "
                         "fedmm.data.raw.ITEM_COLUMNS")
    columns = []
    for part in recipe.parts:
        if part == "year":
            years = pd.to_numeric(items["year"], errors="coerce")
            columns.append([recipe.year_format.format(int(y)) if math.isfinite(y) and y > 0
                            else "" for y in years])
        elif part == "genres":
            columns.append([recipe.genres_format.format(", ".join(names)) if names else ""
                            for names in (split_genres(cell, recipe.ignored_genres)
                                          for cell in items["genres"].fillna("").astype(str))])
        else:
            columns.append(items[part].fillna("").astype(str).str.strip().tolist())
    return [". ".join(p for p in row if p) for row in zip(*columns)]
