"""Implicit feedback, filtering, re-indexing and leave-one-out split, cached once per process.

Protocol (documented in the README):

1. a rating counts as a positive when ``rating > rating-threshold`` (0 keeps every rating);
   duplicate (user, item) pairs keep their latest timestamp;
2. users with fewer than ``min-interactions`` positives are dropped (one pass, users only);
   the catalogue is every item that still has an interaction;
3. users and items are re-indexed to ``0..U-1`` / ``0..N-1`` in sorted raw-id order (numeric
   when every raw id is an integer); partition ``p`` of the federation is user ``p``;
4. each user's positives are ordered by timestamp: the latest is the test item, the second
   latest the validation item, the rest is training data. Equal timestamps (44 % of ML-100K
   users share their latest second between several ratings) are ordered by ``ties``:
   ``"file-order"`` (default; RecBole's convention, a stable sort by time: of two ratings with
   one timestamp, the one later in the data file is the later interaction) or ``"item-id"``
   (the item's position in the sorted catalogue, fedmm's rule before 2026-12-03; on ML-100K it
   holds out the higher, rarer item ids: MostPop test sampled HR@10 30.97 % against 39.66 %
   with file order, docs/results.md section 1.0).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedmm.config import TIE_CHOICES
from fedmm.data.raw import DataError, RawData

if TYPE_CHECKING:   # pandas only where a split is built: a cached split (every client) is numpy
    import pandas as pd

SPLIT_VERSION = 1


@dataclass(frozen=True)
class UserData:
    """One client's own data (all a client ever sees).

    Attributes
    ----------
    user : int
        Internal user index (= partition id).
    train : numpy.ndarray
        int64 ``(n_train,)`` training positives, oldest first.
    valid, test : int
        Held-out validation and test item.
    num_items : int
        Catalogue size ``N``.
    """

    user: int
    train: np.ndarray
    valid: int
    test: int
    num_items: int

    @property
    def interacted(self) -> np.ndarray:
        """All items of this user in any split, int64 sorted unique."""
        return np.unique(np.concatenate([self.train, [self.valid, self.test]]))


@dataclass(frozen=True)
class FederatedData:
    """The leave-one-out split of a whole dataset (server-side bookkeeping and the cache).

    Attributes
    ----------
    name : str
    num_users, num_items : int
    train_ptr : numpy.ndarray
        int64 ``(num_users + 1,)``: user ``u``'s training items are
        ``train_items[train_ptr[u]:train_ptr[u+1]]``.
    train_items : numpy.ndarray
        int64 ``(num_train,)``.
    valid, test : numpy.ndarray
        int64 ``(num_users,)``.
    user_ids, item_ids : numpy.ndarray
        Raw ids (str) of internal users/items.
    """

    name: str
    num_users: int
    num_items: int
    train_ptr: np.ndarray
    train_items: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    def user(self, u: int) -> UserData:
        """Data of user ``u`` (``0 <= u < num_users``)."""
        if not 0 <= u < self.num_users:
            raise DataError(f"partition-id {u} has no user: {self.name} has {self.num_users} users "
                            f"(partition ids 0..{self.num_users - 1}); set num-supernodes to "
                            f"{self.num_users}")
        return UserData(u, self.train_items[self.train_ptr[u]:self.train_ptr[u + 1]],
                        int(self.valid[u]), int(self.test[u]), self.num_items)

    @property
    def num_train(self) -> int:
        return int(self.train_items.size)


@dataclass(frozen=True)
class ItemSide:
    """Server-side item content, rows in internal item order.

    ``items``: DataFrame (N rows) with ``raw_id, title, year, genres, description, image``;
    ``kg``: DataFrame ``item`` (int internal), ``relation``, ``entity`` or ``None``.
    """

    items: pd.DataFrame
    kg: pd.DataFrame | None


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    import pandas as pd

    uniq = pd.unique(ids)
    try:
        return np.array(sorted(uniq, key=int), dtype=object)
    except ValueError:
        return np.array(sorted(uniq), dtype=object)


def build_split(raw: RawData, rating_threshold: float, min_interactions: int,
                ties: str = "file-order") -> tuple[FederatedData, ItemSide]:
    """Apply the protocol of this module to ``raw`` (rows in the data file's order)."""
    import pandas as pd

    if ties not in TIE_CHOICES:
        raise ValueError(f"ties={ties!r}: choose one of {list(TIE_CHOICES)}")
    df = raw.interactions
    df = df[df["rating"] > rating_threshold]
    df = df.assign(_pos=np.arange(len(df)))   # file position, the "file-order" tie-break
    df = df.sort_values(["timestamp"], kind="stable").drop_duplicates(["user", "item"], keep="last")
    counts = df["user"].value_counts()
    df = df[df["user"].isin(counts.index[counts >= min_interactions])]
    if df.empty:
        raise DataError(f"{raw.name}: no user has >= {min_interactions} positives with rating > "
                        f"{rating_threshold}; lower 'rating-threshold' or 'min-interactions'")
    user_ids = _sorted_ids(df["user"].to_numpy())
    item_ids = _sorted_ids(df["item"].to_numpy())
    uidx = pd.Index(user_ids).get_indexer(df["user"].to_numpy())
    iidx = pd.Index(item_ids).get_indexer(df["item"].to_numpy())
    tie_key = df["_pos"].to_numpy() if ties == "file-order" else iidx
    order = np.lexsort((tie_key, df["timestamp"].to_numpy(), uidx))
    u_sorted, i_sorted = uidx[order].astype(np.int64), iidx[order].astype(np.int64)
    n_users = len(user_ids)
    ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u_sorted, minlength=n_users), out=ptr[1:])
    last = ptr[1:] - 1
    test, valid = i_sorted[last], i_sorted[last - 1]
    keep = np.ones(i_sorted.size, dtype=bool)
    keep[last] = keep[last - 1] = False
    train_items = i_sorted[keep]
    train_ptr = ptr - 2 * np.arange(n_users + 1, dtype=np.int64)
    data = FederatedData(raw.name, n_users, len(item_ids), train_ptr, train_items, valid, test,
                         user_ids.astype(str), item_ids.astype(str))
    items = raw.items.reindex(item_ids.astype(str))
    items = items.assign(title=items["title"].fillna(""), genres=items["genres"].fillna(""),
                         description=items["description"].fillna(""), image=items["image"].fillna(""))
    items.insert(0, "raw_id", item_ids.astype(str))
    items = items.reset_index(drop=True)
    kg = None
    if raw.kg is not None:
        pos = pd.Index(item_ids.astype(str)).get_indexer(raw.kg["item"].astype(str))
        kg = raw.kg.assign(item=pos)[pos >= 0].reset_index(drop=True)
    return data, ItemSide(items, kg)


def default_cache_dir() -> Path:
    """``$FEDMM_CACHE`` or ``~/.cache/fedmm``."""
    return Path(os.environ.get("FEDMM_CACHE", Path.home() / ".cache" / "fedmm"))


def local_data_dir(dataset: str) -> Path | None:
    """The directory of a ``grouplens:<dir>`` or ``amazon:<dir>:<Category>`` dataset, else None."""
    if dataset.startswith("grouplens:"):
        return Path(dataset.split(":", 1)[1]).expanduser()
    if dataset.startswith("amazon:") and dataset.count(":") >= 2:
        return Path(dataset.split(":", 1)[1].rsplit(":", 1)[0]).expanduser()
    return None


def _cache_key(dataset: str, rating_threshold: float, min_interactions: int, ties: str) -> str:
    stamp: dict[str, object] = {"v": SPLIT_VERSION, "dataset": dataset, "thr": rating_threshold,
                                "min": min_interactions}
    if ties != "item-id":          # item-id splits keep the key they had before the option
        stamp["ties"] = ties
    local = local_data_dir(dataset)
    if local is not None and local.is_dir():  # local files: invalidate when any of them changes
        stamp["files"] = sorted((str(p.relative_to(local)), p.stat().st_size, int(p.stat().st_mtime))
                                for p in local.rglob("*") if p.is_file())
    h = hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset.split(":")[0])
    return f"{safe}-{h}"


@functools.lru_cache(maxsize=4)
def load_federated(dataset: str, rating_threshold: float, min_interactions: int,
                   cache_dir: str = "", ties: str = "file-order") -> FederatedData:
    """The split, parsed once per process: from the on-disk cache when present, else built from
    the raw files and cached (written atomically, so concurrent processes are safe)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    path = root / "splits" / f"{_cache_key(dataset, rating_threshold, min_interactions, ties)}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return FederatedData(str(z["name"]), int(z["num_users"]), int(z["num_items"]), z["train_ptr"],
                             z["train_items"], z["valid"], z["test"], z["user_ids"], z["item_ids"])
    data, side = _build(dataset, rating_threshold, min_interactions, ties)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, name=data.name, num_users=data.num_users, num_items=data.num_items,
             train_ptr=data.train_ptr, train_items=data.train_items, valid=data.valid, test=data.test,
             user_ids=data.user_ids, item_ids=data.item_ids)
    os.replace(tmp, path)
    side_path = path.with_suffix(".items.pkl")
    tmp = side_path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(side, fh)
    os.replace(tmp, side_path)
    return data


@functools.lru_cache(maxsize=2)
def load_item_side(dataset: str, rating_threshold: float, min_interactions: int,
                   cache_dir: str = "", ties: str = "file-order") -> ItemSide:
    """Server-side item content in internal order (never sent to clients)."""
    load_federated(dataset, rating_threshold, min_interactions, cache_dir, ties)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    side_path = root / "splits" / f"{_cache_key(dataset, rating_threshold, min_interactions, ties)}.items.pkl"
    if side_path.is_file():
        with open(side_path, "rb") as fh:
            return pickle.load(fh)
    return _build(dataset, rating_threshold, min_interactions, ties)[1]


def _build(dataset: str, rating_threshold: float, min_interactions: int,
           ties: str) -> tuple[FederatedData, ItemSide]:
    from fedmm.data.loaders import load_raw

    return build_split(load_raw(dataset), rating_threshold, min_interactions, ties)
