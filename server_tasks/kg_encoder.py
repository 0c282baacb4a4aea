"""GFMFR knowledge/metadata modality: KG entities, genres and release decade -> dense features.

:func:`encode_kg_meta`: multi-hot of linked KG entities (plain and relation-typed), genres and
release decade -> TF-IDF -> TruncatedSVD. No Flower import here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from server_tasks.item_text import split_genres

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
            tokens[i].extend(f"genre:{g}" for g in split_genres(genres, ignored=frozenset()))
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
