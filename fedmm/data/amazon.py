"""Loader for local Amazon Reviews 2023 files (McAuley lab, Hou et al. 2024, "Bridging Language
and Items for Retrieval and Recommendation"; https://amazon-reviews-2023.github.io/).

The data cannot be downloaded on these machines. Download, elsewhere, the two files of one
category in the published JSON-lines format (plain ``.jsonl`` as on the Hugging Face hub, or
``.jsonl.gz`` as on the project site), copy them into one directory and set
``dataset = "amazon:<dir>:<Category>"``. Accepted layouts of ``<dir>``::

    <dir>/<Category>.jsonl[.gz]                         reviews
    <dir>/meta_<Category>.jsonl[.gz]                    item metadata
    <dir>/raw/review_categories/<Category>.jsonl        (the hub repository layout)
    <dir>/raw/meta_categories/meta_<Category>.jsonl
    <dir>/images/<parent_asin>.jpg                      optional local item images

Review lines carry ``rating, title, text, images, asin, parent_asin, user_id, timestamp``
(milliseconds), ``helpful_vote, verified_purchase``; metadata lines carry ``main_category,
title, average_rating, rating_number, features, description`` (list of str), ``price, images``
(list of ``{thumb, large, variant, hi_res}``), ``videos, store, categories, details,
parent_asin, bought_together``. Items are keyed by ``parent_asin`` (all colour/size variants of
a product are one item).

Supported categories (with accepted aliases): ``All_Beauty`` (``Beauty``; the release names the
file ``All_Beauty``), ``Office_Products``, ``Toys_and_Games``, ``Digital_Music``,
``Tools_and_Home_Improvement`` (``Tools_and_Home``).
"""
from __future__ import annotations

import gzip
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.data.raw import DataError, RawData

#: Canonical category -> file stems to look for (release name first).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "All_Beauty": ("All_Beauty", "Beauty"),
    "Office_Products": ("Office_Products",),
    "Toys_and_Games": ("Toys_and_Games",),
    "Digital_Music": ("Digital_Music",),
    "Tools_and_Home_Improvement": ("Tools_and_Home_Improvement", "Tools_and_Home"),
}
_ALIASES = {"beauty": "All_Beauty", "tools_and_home": "Tools_and_Home_Improvement"}
_REVIEW_KEYS = ("rating", "parent_asin", "user_id", "timestamp")
_REVIEW_DIRS = ("", "raw/review_categories", "review_categories")
_META_DIRS = ("", "raw/meta_categories", "meta_categories")
_EXTS = (".jsonl", ".jsonl.gz")
#: ``details`` keys that hold a date, most specific first.
_DATE_KEYS = ("Date First Available", "Release date", "Original Release Date", "Date Published",
              "Publication date")
_YEAR_RE = re.compile(r"\b(19\d{2}|20\d{2})\b")


def _canonical_category(category: str) -> str:
    key = re.sub(r"[\s\-]+", "_", str(category).strip()).lower()
    for name in CATEGORIES:
        if name.lower() == key:
            return name
    if key in _ALIASES:
        return _ALIASES[key]
    raise DataError(f"dataset 'amazon:<dir>:{category}': unsupported category {category!r}; "
                    f"supported: {list(CATEGORIES)} (aliases: Beauty, Tools_and_Home)")


def _download_hint(directory: Path, category: str) -> str:
    stem = CATEGORIES[category][0]
    return (f"The Amazon Reviews 2023 data cannot be downloaded on these machines: download "
            f"{stem}.jsonl and meta_{stem}.jsonl (or the .jsonl.gz files) from "
            f"https://amazon-reviews-2023.github.io/ on another machine, copy them into "
            f"{directory}, and set dataset = \"amazon:{directory}:{category}\".")


def _find(directory: Path, prefix: str, stems: tuple[str, ...],
          subdirs: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for sub in subdirs:
            for ext in _EXTS:
                path = directory / sub / f"{prefix}{stem}{ext}"
                if path.is_file():
                    return path
    return None


def _iter_jsonl(path: Path):
    """Yield ``(line number, dict)`` of a ``.jsonl`` or ``.jsonl.gz`` file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); the file must "
                                    "hold one JSON object per line (Amazon Reviews 2023 format)"
                                    ) from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                                    f"{type(record).__name__}")
                yield lineno, record
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc}); "
                        "re-download or decompress it") from None


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value if _text(v))
    return str(value).strip()


def _first_image_url(images) -> str:
    """First ``large`` URL (else ``hi_res``, ``thumb``) of a metadata ``images`` field."""
    if isinstance(images, dict):  # column-wise variant some converters produce
        for key in ("large", "hi_res", "thumb"):
            for url in images.get(key) or []:
                if url:
                    return str(url)
        return ""
    for key in ("large", "hi_res", "thumb"):
        for entry in images or []:
            if isinstance(entry, dict) and entry.get(key):
                return str(entry[key])
    return ""


def _year(details) -> float:
    if not isinstance(details, dict):
        return np.nan
    for key in _DATE_KEYS:
        if key in details:
            match = _YEAR_RE.search(str(details[key]))
            if match:
                return float(match.group(1))
    return np.nan


def _genres(record: dict) -> str:
    cats = [str(c).replace("|", "/").strip() for c in (record.get("categories") or []) if c]
    if not cats and record.get("main_category"):
        cats = [str(record["main_category"]).replace("|", "/").strip()]
    return "|".join(c for c in cats if c)


def load_amazon2023(directory, category: str) -> RawData:
    """Read one category of Amazon Reviews 2023 from local files.

    Parameters
    ----------
    directory : str or os.PathLike
        Folder with the category's review and metadata files (layouts in the module docstring).
    category : str
        One of :data:`CATEGORIES` or an alias (``Beauty``, ``Tools_and_Home``).

    Returns
    -------
    RawData
        ``name = "amazon2023-<Category>"``. ``interactions``: ``user`` = ``user_id``, ``item`` =
        ``parent_asin``, ``rating`` (float), ``timestamp`` (int64 seconds; the files hold
        milliseconds); every review line is kept (repeated reviews of one item by one user
        included). ``items`` (index ``parent_asin``, one row per reviewed item): ``title``,
        ``year`` (from ``details["Date First Available"]`` or similar, NaN if none), ``genres``
        (``categories`` joined by ``|``, else ``main_category``), ``description``
        (``description`` then ``features``, joined), ``image`` (``<dir>/images/<parent_asin>.jpg``
        when it exists, else the first ``images[].large`` URL, else ``""``). ``kg = None``.

    Raises
    ------
    DataError
        Unsupported category, missing file (message names the expected path and how to get the
        data), malformed line or missing key (message names file and line).
    """
    d = Path(directory).expanduser()
    cat = _canonical_category(category)
    stems = CATEGORIES[cat]
    reviews_path = _find(d, "", stems, _REVIEW_DIRS)
    if reviews_path is None:
        raise DataError(f"Amazon Reviews 2023 reviews file not found: expected "
                        f"{d / (stems[0] + '.jsonl')} (or .jsonl.gz, or under "
                        f"raw/review_categories/). {_download_hint(d, cat)}")
    meta_path = _find(d, "meta_", stems, _META_DIRS)
    if meta_path is None:
        raise DataError(f"Amazon Reviews 2023 metadata file not found: expected "
                        f"{d / ('meta_' + stems[0] + '.jsonl')} (or .jsonl.gz, or under "
                        f"raw/meta_categories/). {_download_hint(d, cat)}")

    users, items, ratings, stamps = [], [], [], []
    for lineno, rec in _iter_jsonl(reviews_path):
        missing = [k for k in _REVIEW_KEYS if rec.get(k) is None]
        if missing:
            raise DataError(f"{reviews_path}:{lineno}: review lacks keys {missing}; expected the "
                            f"Amazon Reviews 2023 review format ({', '.join(_REVIEW_KEYS)}, ...)")
        try:
            ratings.append(float(rec["rating"]))
            stamps.append(int(rec["timestamp"]) // 1000)
        except (TypeError, ValueError):
            raise DataError(f"{reviews_path}:{lineno}: rating {rec['rating']!r} or timestamp "
                            f"{rec['timestamp']!r} is not numeric") from None
        users.append(str(rec["user_id"]))
        items.append(str(rec["parent_asin"]))
    interactions = pd.DataFrame({"user": users, "item": items,
                                 "rating": np.asarray(ratings, dtype=float),
                                 "timestamp": np.asarray(stamps, dtype=np.int64)})

    reviewed = set(items)
    rows: dict[str, dict] = {}
    for lineno, rec in _iter_jsonl(meta_path):
        asin = rec.get("parent_asin")
        if asin is None:
            raise DataError(f"{meta_path}:{lineno}: metadata lacks 'parent_asin'")
        asin = str(asin)
        if asin not in reviewed or asin in rows:
            continue
        local = d / "images" / f"{asin}.jpg"
        rows[asin] = {
            "title": _text(rec.get("title")),
            "year": _year(rec.get("details")),
            "genres": _genres(rec),
            "description": " ".join(t for t in (_text(rec.get("description")),
                                                _text(rec.get("features"))) if t),
            "image": str(local) if local.is_file() else _first_image_url(rec.get("images")),
        }
    order = list(dict.fromkeys(items))
    no_meta = [a for a in order if a not in rows]
    if no_meta:
        warnings.warn(f"{meta_path}: {len(no_meta)} of {len(order)} reviewed items have no "
                      f"metadata (e.g. {no_meta[0]}); they get empty title/description/image",
                      RuntimeWarning, stacklevel=2)
    empty = {"title": "", "year": np.nan, "genres": "", "description": "", "image": ""}
    items_df = pd.DataFrame([rows.get(a, empty) for a in order],
                            index=pd.Index(order, name="item", dtype=object),
                            columns=["title", "year", "genres", "description", "image"])
    items_df["year"] = items_df["year"].astype(float)
    raw = RawData(f"amazon2023-{cat}", interactions, items_df, None)
    raw.validate(str(reviews_path))
    return raw
