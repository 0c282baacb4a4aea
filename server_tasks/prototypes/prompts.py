"""FedSLLM prompts: the initial catalogue summary and the usage-count revision request.

* :func:`initial_prompt` summarises the item table (genre statistics, year range, a few example
  titles) and asks for at most ``P_max`` archetypes;
* :func:`update_prompt` shows the current prototypes with the counts the clients reported and
  asks to keep stable high-usage ones, merge low-usage overlapping ones, split coarse
  high-usage ones and add new ones only for under-represented patterns.

No Flower import here.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from server_tasks.item_text import split_genres

#: System message of every chat request.
SYSTEM_PROMPT = ("You name item archetypes for a recommender system. "
                 "Answer only with a numbered list of short names.")


def _genre_counts(items: pd.DataFrame) -> Counter:
    """Items per genre over the ``|``-separated ``genres`` column (:func:`split_genres` labels)."""
    counts: Counter = Counter()
    if "genres" not in items.columns:
        return counts
    for value in items["genres"].fillna("").astype(str):
        counts.update(set(split_genres(value)))
    return counts


def _check_items(items: pd.DataFrame) -> None:
    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"items must be a pandas DataFrame, got {type(items).__name__}")
    if "title" not in items.columns:
        raise ValueError("items lacks the column 'title' (expected the columns of "
                         "fedmm.data.raw.ITEM_COLUMNS: title, year, genres, description, image)")
    if len(items) == 0:
        raise ValueError("items is empty: prototypes need at least one item")


def _check_max(max_prototypes: int) -> int:
    if int(max_prototypes) <= 0:
        raise ValueError(f"max_prototypes must be positive, got {max_prototypes}")
    return int(max_prototypes)


def item_noun_for(dataset: str, configured: str = "") -> str:
    """Noun used in the LLM prompts: ``configured`` if set, else from the dataset name.

    ``ml-*`` and ``grouplens:`` -> ``"movie"``, ``amazon:`` -> ``"product"``, else ``"item"``.
    """
    if configured.strip():
        return configured.strip()
    if dataset.startswith(("ml-", "grouplens:")):
        return "movie"
    if dataset.startswith("amazon:"):
        return "product"
    return "item"


def initial_prompt(items_df: pd.DataFrame, max_prototypes: int, *, item_noun: str = "item",
                   num_genres: int = 12, num_examples: int = 6) -> str:
    """First prompt: summary of the catalogue, asking for at most ``max_prototypes`` archetypes.

    Parameters
    ----------
    items_df : pandas.DataFrame
        Item table (rows = internal item index) with ``title`` and, when present, ``year``
        (float, NaN if unknown) and ``genres`` (``|``-separated), as in
        :data:`fedmm.data.raw.ITEM_COLUMNS`.
    max_prototypes : int
        Number of archetypes asked for.
    item_noun : str, default "item"
        What an item is (``"movie"``, ``"product"``); small LLMs answer better with the
        concrete noun.
    num_genres : int, default 12
        Most frequent genres listed with their share of items.
    num_examples : int, default 6
        Example titles, taken at evenly spaced rows (deterministic, no RNG).

    Returns
    -------
    str
    """
    _check_items(items_df)
    k = _check_max(max_prototypes)
    n = len(items_df)
    lines = [f"Here is a catalogue of {n} {item_noun}s."]
    genres = _genre_counts(items_df).most_common()
    genres.sort(key=lambda gc: (-gc[1], gc[0]))
    if genres:
        shown = ", ".join(f"{g} ({100.0 * c / n:.0f}%)" for g, c in genres[:max(1, num_genres)])
        lines.append(f"Most common genres: {shown}.")
    if "year" in items_df.columns:
        years = pd.to_numeric(items_df["year"], errors="coerce").dropna()
        if len(years):
            lines.append(f"Years: {int(years.min())} to {int(years.max())}.")
    rows = sorted({int(round(r)) for r in np.linspace(0, n - 1, min(n, max(1, num_examples)))})
    titles = []
    for r in rows:
        title = str(items_df["title"].iloc[r]).strip()
        year = items_df["year"].iloc[r] if "year" in items_df.columns else None
        if title:
            titles.append(f"{title} ({int(year)})" if isinstance(year, (int, float))
                          and math.isfinite(year) else title)
    if titles:
        lines.append("Example titles: " + "; ".join(titles) + ".")
    lines.append("")
    lines.append(f"Write a numbered list of {k} different {item_noun} types that describe this "
                 "catalogue, 2 to 4 words each (like \"Action adventure\" or \"Romantic "
                 "comedy\"). Only the list.")
    return "\n".join(lines)


def update_prompt(prototypes: Sequence[str], counts, max_prototypes: int, *,
                  item_noun: str = "item") -> str:
    """Update prompt: current prototypes with their aggregated usage counts since the last revision.

    Parameters
    ----------
    prototypes : sequence of str
        Current prototype names ``p_1..p_P``.
    counts : array-like or None
        int, shape ``(P,)``: summed client counts ``sum_u c_u[j]``; ``None`` when no feedback
        has arrived yet (the list is shown without counts).
    max_prototypes : int
        Upper bound on the revised list.
    item_noun : str, default "item"
        See :func:`initial_prompt`.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        ``prototypes`` is empty or ``counts`` does not have one entry per prototype.
    """
    k = _check_max(max_prototypes)
    prototypes = [str(p) for p in prototypes]
    if not prototypes:
        raise ValueError("update_prompt needs the current prototypes; use initial_prompt first")
    if counts is not None:
        counts = np.asarray(counts, dtype=np.int64).reshape(-1)
        if counts.shape[0] != len(prototypes):
            raise ValueError(f"counts has {counts.shape[0]} entries for {len(prototypes)} "
                             "prototypes; they must be aligned")
        total = max(1, int(counts.sum()))
        listing = [f"{j + 1}. {p} (used {int(c)} times, {100.0 * c / total:.0f}%)"
                   for j, (p, c) in enumerate(zip(prototypes, counts))]
        head = (f"These are the current {item_noun} types and how often the clients' training "
                "samples matched each since the last revision:")
    else:
        listing = [f"{j + 1}. {p}" for j, p in enumerate(prototypes)]
        head = f"These are the current {item_noun} types:"
    rules = ("Revise the list. Keep the types that are used often. Merge types that are used "
             "rarely and overlap. Split a broad type that is used very often into narrower "
             "types. Add a new type only for a pattern that is missing.")
    ask = (f"Write a numbered list of at most {k} {item_noun} types, 2 to 4 words each. "
           "Only the list.")
    return "\n".join([head, *listing, "", rules, ask])
