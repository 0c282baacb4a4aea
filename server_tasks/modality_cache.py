"""On-disk cache of GFMFR's item-modality tables (text, image, kg).

:class:`ModalityCache` / :func:`cached_modalities` — each modality cached as ``.npy`` keyed by
dataset, modality, encoder and a hash of the encoder's inputs (item titles included), so a
different item set never reads a stale cache; :func:`cached_text_embeddings` caches FedSLLM's
item-text embeddings the same way; :func:`item_modalities` builds GFMFR's tables from the
modalities a dataset has. The encoders are
:func:`server_tasks.text_encoder.encode_texts`, :func:`server_tasks.image_encoder.encode_images`
and :func:`server_tasks.kg_encoder.encode_kg_meta`. No Flower import here.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from fedmm.config import ConfigError
from server_tasks.image_encoder import encode_images
from server_tasks.item_text import GFMFR_TEXT, ItemTextRecipe, item_texts
from server_tasks.kg_encoder import encode_kg_meta
from server_tasks.text_encoder import encode_texts

#: Modalities :func:`cached_modalities` knows.
MODALITIES = ("text", "image", "kg")


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder each modality uses (read once from the run config).

    Attributes
    ----------
    text_model : str or None
        ``text-encoder``; ``None`` = packaged all-MiniLM-L6-v2.
    image_model : str or None
        ``image-encoder``; ``None`` = packaged EfficientNet-Lite0.
    kg_dim : int
        ``kg-dim``: size of the knowledge/metadata embedding.
    seed : int
        Seed of the knowledge/metadata SVD.
    device : str
        Device of the neural encoders.
    """

    text_model: str | None = None
    image_model: str | None = None
    kg_dim: int = 64
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_mapping(cls, values: Mapping) -> EncoderConfig:
        """Build from a dict with attribute names or run-config keys (``text-encoder``, ...)."""
        alias = {"text-encoder": "text_model", "image-encoder": "image_model",
                 "kg-dim": "kg_dim", "kg_dim": "kg_dim"}
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = alias.get(key, key.replace("-", "_"))
            if name not in known:
                raise KeyError(f"encoders config: unknown key {key!r}; known keys are "
                               f"{sorted(known | set(alias))}")
            kwargs[name] = value
        for name in ("text_model", "image_model"):
            if kwargs.get(name) == "":
                kwargs[name] = None
        for name in ("kg_dim", "seed"):
            if name in kwargs:
                kwargs[name] = int(kwargs[name])
        return cls(**kwargs)

    def encoder_tag(self, modality: str) -> str:
        """Short, filename-safe name of the encoder of ``modality`` (part of the cache key)."""
        if modality == "text":
            raw = self.text_model or "all-MiniLM-L6-v2"
        elif modality == "image":
            raw = self.image_model or "efficientnet-lite0"
        elif modality == "kg":
            raw = f"tfidf-svd{self.kg_dim}-seed{self.seed}"
        else:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        return _safe_name(raw)


def _safe_name(text: str) -> str:
    """Filename-safe form of ``text``; long or path-like names get a short hash suffix so two
    different model paths never share a cache entry."""
    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "default"
    if safe != text or len(safe) > 60:
        safe = f"{safe[-60:].strip('_')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe


def _content_hash(items_df: pd.DataFrame, kg_df: pd.DataFrame | None, modality: str,
                  text_recipe: ItemTextRecipe) -> str:
    """SHA-1 (12 hex) of the titles plus every input the modality's encoder reads."""
    h = hashlib.sha1()

    def feed(values) -> None:
        for v in values:
            h.update(str(v).encode("utf-8"))
            h.update(b"\x1f")
        h.update(b"\x1e")

    feed([len(items_df)])
    feed(items_df["title"].fillna("").astype(str))
    if modality == "text":
        feed(item_texts(items_df, text_recipe))
    elif modality == "image":
        feed(items_df["image"].fillna("").astype(str))
    elif modality == "kg":
        feed(items_df["genres"].fillna("").astype(str))
        feed(items_df["year"].astype(str))
        if kg_df is not None:
            feed(pd.util.hash_pandas_object(kg_df[["item", "relation", "entity"]],
                                            index=False).to_numpy())
    return h.hexdigest()[:12]


class ModalityCache:
    """``.npy`` cache of modality tables under ``cache_dir/<dataset>/``.

    Each entry is two files, ``<modality>__<encoder>__<hash>.features.npy`` (float32
    ``(N, d)``) and ``...mask.npy`` (bool ``(N,)``), written atomically.

    Parameters
    ----------
    cache_dir : str or os.PathLike
    """

    def __init__(self, cache_dir) -> None:
        self.cache_dir = Path(cache_dir)

    def paths(self, dataset_key: str, modality: str, encoder_tag: str,
              content_hash: str) -> tuple[Path, Path]:
        """(features path, mask path) of one entry."""
        stem = f"{modality}__{encoder_tag}__{content_hash}"
        folder = self.cache_dir / _safe_name(dataset_key)
        return folder / f"{stem}.features.npy", folder / f"{stem}.mask.npy"

    def load(self, paths: tuple[Path, Path], num_items: int):
        """``(features, mask)`` if both files exist and fit ``num_items``, else ``None``."""
        feat_path, mask_path = paths
        if not (feat_path.is_file() and mask_path.is_file()):
            return None
        try:
            features = np.load(feat_path, allow_pickle=False)
            mask = np.load(mask_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            warnings.warn(f"modality cache {feat_path} unreadable ({exc}); recomputing",
                          RuntimeWarning, stacklevel=2)
            return None
        if features.ndim != 2 or features.shape[0] != num_items or mask.shape != (num_items,):
            warnings.warn(f"modality cache {feat_path} has shape {features.shape}, expected "
                          f"({num_items}, d); recomputing", RuntimeWarning, stacklevel=2)
            return None
        return features.astype(np.float32, copy=False), mask.astype(bool, copy=False)

    @staticmethod
    def save(paths: tuple[Path, Path], features: np.ndarray, mask: np.ndarray) -> None:
        """Write both files (via a temporary file + rename, safe for concurrent readers)."""
        for path, array in zip(paths, (features.astype(np.float32), mask.astype(bool))):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            os.replace(tmp, path)


def _encode_modality(modality: str, items_df: pd.DataFrame, kg_df: pd.DataFrame | None,
                     cfg: EncoderConfig,
                     text_recipe: ItemTextRecipe) -> tuple[np.ndarray, np.ndarray]:
    if modality == "text":
        texts = item_texts(items_df, text_recipe)
        features = encode_texts(texts, model=cfg.text_model, device=cfg.device)
        mask = np.array([bool(t) for t in texts], dtype=bool)
        features[~mask] = 0.0
        return features, mask
    if modality == "image":
        return encode_images(items_df["image"].fillna("").astype(str).tolist(),
                             model=cfg.image_model, device=cfg.device)
    features = encode_kg_meta(items_df, kg_df, dim=cfg.kg_dim, seed=cfg.seed)
    return features, np.any(features != 0, axis=1)


def cached_modalities(dataset_key: str, items_df: pd.DataFrame, kg_df: pd.DataFrame | None,
                      modalities: list[str], encoders: EncoderConfig | Mapping | None,
                      cache_dir, text_recipe: ItemTextRecipe = GFMFR_TEXT
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Encode (or load from cache) each requested item modality.

    Parameters
    ----------
    dataset_key : str
        Dataset name as in the run config (e.g. ``"ml-100k"``); made filename-safe.
    items_df : pandas.DataFrame
        One row per internal item index ``0..N-1`` in order; columns ``title``, ``year``,
        ``genres``, ``description``, ``image``.
    kg_df : pandas.DataFrame or None
        Triples ``item`` (internal index), ``relation``, ``entity``.
    modalities : list of str
        Subset of :data:`MODALITIES` (``"text"``, ``"image"``, ``"kg"``).
    encoders : EncoderConfig, mapping or None
        Encoder per modality (``None`` = defaults).
    cache_dir : str or os.PathLike
        Root of the cache.
    text_recipe : ItemTextRecipe, default :data:`server_tasks.item_text.GFMFR_TEXT`
        How the text modality's item texts are written (:func:`server_tasks.item_text.item_texts`);
        an item whose text is empty is masked out.

    Returns
    -------
    dict
        ``modality -> (features float32 (N, d_m), mask bool (N,))``.
    """
    cfg = (encoders if isinstance(encoders, EncoderConfig)
           else EncoderConfig() if encoders is None else EncoderConfig.from_mapping(encoders))
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; expected a subset of {list(MODALITIES)}")
    missing = [c for c in ("title", "year", "genres", "description", "image")
               if c not in items_df.columns]
    if missing:
        raise ValueError(f"items_df lacks columns {missing} (see fedmm.data.raw.ITEM_COLUMNS)")
    cache = ModalityCache(cache_dir)
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for modality in dict.fromkeys(modalities):
        paths = cache.paths(dataset_key, modality, cfg.encoder_tag(modality),
                            _content_hash(items_df, kg_df, modality, text_recipe))
        entry = cache.load(paths, len(items_df))
        if entry is None:
            entry = _encode_modality(modality, items_df, kg_df, cfg, text_recipe)
            cache.save(paths, *entry)
        if not entry[1].any():
            warnings.warn(f"modality {modality!r} of {dataset_key!r} is missing for every item; "
                          "consider dropping it from the modality list", RuntimeWarning,
                          stacklevel=2)
        result[modality] = entry
    return result


def cached_text_embeddings(texts: list[str], dataset_key: str, encoder_tag: str,
                           encode_fn: Callable[[list[str]], np.ndarray],
                           cache_dir: str | Path | None) -> tuple[np.ndarray, bool]:
    """Embed ``texts`` or load them from the modality cache.

    Parameters
    ----------
    texts : list of str
        ``N`` item texts (:func:`server_tasks.item_text.item_texts`).
    dataset_key : str
        Dataset name as in the run config (part of the cache path).
    encoder_tag : str
        Filename-safe encoder name (part of the cache key).
    encode_fn : callable
        ``list[str] -> float (N, D)``.
    cache_dir : str, pathlib.Path or None
        Root of :class:`ModalityCache`; ``None`` disables caching.

    Returns
    -------
    features : numpy.ndarray
        float32, shape ``(N, D)``.
    hit : bool
        Whether they came from the cache.
    """
    def encode() -> np.ndarray:
        x = np.asarray(encode_fn(list(texts)), dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != len(texts):
            raise ValueError(f"text encoder returned shape {x.shape} for {len(texts)} texts")
        return x

    if cache_dir is None:
        return encode(), False
    digest = hashlib.sha1("\x1e".join(texts).encode("utf-8")).hexdigest()[:12]
    cache = ModalityCache(cache_dir)
    paths = cache.paths(dataset_key, "fedsllm-text", encoder_tag, f"{len(texts)}-{digest}")
    entry = cache.load(paths, len(texts))
    if entry is not None:
        return entry[0], True
    x = encode()
    cache.save(paths, x, np.ones(len(texts), dtype=bool))
    return x, False


def _unavailable(modality: str, items: pd.DataFrame, kg: pd.DataFrame | None) -> str:
    """Why ``modality`` cannot be built from this dataset ("" when it can)."""
    def any_text(col: str) -> bool:
        return bool(items[col].fillna("").astype(str).str.strip().ne("").any())

    if modality == "image" and not any_text("image"):
        return "the dataset has no item images"
    if modality == "text" and not (any_text("title") or any_text("description")):
        return "the dataset has no item titles or descriptions"
    if modality == "kg" and kg is None and not any_text("genres") and not items["year"].notna().any():
        return "the dataset has no knowledge graph, genres or years"
    return ""


def item_modalities(dataset_key: str, items: pd.DataFrame, kg: pd.DataFrame | None,
                    modalities: Sequence[str], encoders: EncoderConfig, cache_dir: str | Path
                    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """GFMFR's item-modality tables: encode (or read from cache) the requested modalities the
    dataset has.

    Parameters
    ----------
    dataset_key : str
        Dataset name of the run config (part of the cache key).
    items : pandas.DataFrame
        Item side information, internal order (``fedmm.data.split.ItemSide.items``).
    kg : pandas.DataFrame or None
        Knowledge-graph triples with internal item indices.
    modalities : sequence of str
        The requested modalities (``gfmfr-modalities``), a subset of :data:`MODALITIES`.
    encoders : EncoderConfig
        Encoder of each modality (seed of the KG/metadata SVD, device).
    cache_dir : str or os.PathLike
        Root of the modality cache.

    Returns
    -------
    tables : dict
        ``modality -> (features float32 (N, d_m), mask bool (N,))`` of the modalities used; the
        text modality reads :data:`server_tasks.item_text.GFMFR_TEXT`.
    notes : dict
        ``modality -> reason`` for every requested modality that was dropped or degraded (the
        caller logs them).

    Raises
    ------
    ConfigError
        No requested modality is available (names ``gfmfr-modalities``).
    """
    notes: dict[str, str] = {}
    usable = []
    for m in modalities:
        why = _unavailable(m, items, kg)
        if why:
            notes[m] = f"dropped: {why}"
        else:
            usable.append(m)
    if "kg" in usable and kg is None:
        notes["kg"] = "no knowledge graph: genres and release year only"
    tables = cached_modalities(dataset_key, items, kg, usable, encoders, cache_dir,
                               text_recipe=GFMFR_TEXT) if usable else {}
    for m in list(tables):
        if not tables[m][1].any():
            notes[m] = "dropped: missing for every item"
            del tables[m]
    if not tables:
        raise ConfigError(f"run-config key 'gfmfr-modalities' = {','.join(modalities)!r}: "
                          f"none is available for dataset {dataset_key!r} ({notes}); add one the "
                          f"dataset has (text needs titles, kg needs a KG, genres or years)")
    return tables, notes
