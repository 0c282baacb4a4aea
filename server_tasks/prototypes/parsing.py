"""Parsing and validation of LLM answers into prototype names, and the genre fallback.

No Flower import here.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import pandas as pd

from server_tasks.prototypes.errors import PrototypeValidationError
from server_tasks.prototypes.prompts import _genre_counts

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
    return _parse(text, max_words)[1]


def _parse(text: str, max_words: int) -> tuple[str, list[str]]:
    """:func:`parse_prototypes`, and which reading it used: ``"json"``, ``"marked"`` (list
    markers present: only marked lines count), ``"unmarked"`` or ``"empty"``."""
    text = _SPECIAL.sub("", _THINK.sub("", text))
    text = _FENCE.sub("\n", text).strip()
    if not text:
        return "empty", []
    json_items = _json_items(text)
    if json_items is not None:
        cleaned = (_clean_item(s, max_words) for s in json_items)
        return "json", [c for c in cleaned if c]
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
    return ("marked" if marked else "unmarked"), [c for c in cleaned if c]


def full_list_prefix(text: str, is_full: Callable[[list[str]], bool], *,
                     max_words: int = 6) -> str | None:
    """The part of a partial answer that already holds a full list, or ``None``.

    For stopping generation once the answer is complete: a model asked for "at most N" often
    goes on past its list (more entries, repeats, chatter) until the length bound, and
    everything it writes after the list is full is thrown away by validation. ``text`` is cut
    after its last newline (the unfinished line is not read); the cut text counts only if it
    is read as a marked list (numbered or bulleted lines, no JSON) and ``is_full`` holds for
    its names. A marked list read from a prefix is a prefix of the list read from any longer
    answer, so the names kept from the full answer are the same, unless the model would
    have gone on to a JSON array (then the longer answer would be read as JSON).

    Parameters
    ----------
    text : str
        The answer so far.
    is_full : callable
        ``(list[str]) -> bool``: whether these parsed names (duplicates included, in order)
        already fill the list, e.g. the validation keeps as many as it would ever keep.
    max_words : int, default 6
        As :func:`parse_prototypes`.

    Returns
    -------
    str or None
        ``text`` up to its last newline (trailing whitespace removed) when it holds a full
        list, else ``None``.
    """
    cut = text.rfind("\n")
    if cut < 0:
        return None
    head = text[:cut].rstrip()
    mode, names = _parse(head, max_words)
    return head if mode == "marked" and is_full(names) else None


def stopped_answer(answer: str, is_full: Callable[[list[str]], bool], *,
                   max_words: int = 6) -> str | None:
    """Where a generation told to stop at a full list would have stopped in a whole
    ``answer``: :func:`full_list_prefix` at its first newline that gives one, else ``None``.
    Greedy decoding makes the same tokens up to the stop, so for a logged whole answer this is
    the answer the stopped generation returns."""
    for i, ch in enumerate(answer):
        if ch == "\n" and (head := full_list_prefix(answer[:i + 1], is_full,
                                                     max_words=max_words)) is not None:
            return head
    return None


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
    kept, dropped = _usable(names, int(max_len))
    kept = kept[:int(max_count)]
    if len(kept) < int(min_count):
        raise PrototypeValidationError(
            f"only {len(kept)} usable prototype(s) {kept} (need at least {min_count}); "
            f"dropped as empty or longer than {max_len} characters: {dropped[:5]}")
    return kept


def _usable(names: Sequence[str], max_len: int) -> tuple[list[str], list[str]]:
    """Cleaned, case-insensitively deduplicated names (first spelling kept, uncut) and the
    names dropped as empty or longer than ``max_len`` (:func:`validate_prototypes`)."""
    kept: list[str] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"prototype names must be str, got {type(name).__name__} ({name!r})")
        clean = " ".join(name.split())
        key = clean.casefold()
        if not clean or not re.search(r"\w", clean) or len(clean) > max_len:
            dropped.append(name)
        elif key not in seen:
            seen.add(key)
            kept.append(clean)
    return kept, dropped


def count_usable(names: Sequence[str], max_len: int = 60) -> int:
    """How many distinct usable names :func:`validate_prototypes` would find in ``names``
    before cutting to ``max_count``."""
    return len(_usable(names, int(max_len))[0])


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
