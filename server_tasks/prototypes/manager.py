"""FedSLLM :class:`PrototypeManager`: the prototypes in force, refreshed through a backend.

No Flower import here.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from server_tasks.prototypes.backends import (PrototypeGenerator, PrototypeProposal,
                                              PrototypeRequest)
from server_tasks.prototypes.embedding import cosine_similarity_matrix
from server_tasks.prototypes.errors import (PrototypeBackendError, PrototypeError,
                                            PrototypeValidationError)
from server_tasks.prototypes.parsing import (_title_keys, count_usable, genre_prototypes,
                                             validate_prototypes)
from server_tasks.prototypes.prompts import _check_items, _check_max

logger = logging.getLogger(__name__)


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
    stop_full : bool, default True
        Let a local LLM stop generating once its answer holds ``max_prototypes`` usable names
        (:meth:`is_full`): what it would write after them is dropped by the validation
        anyway, so the accepted names are the same. ``False``: generate up to the length bound.
    """

    def __init__(self, generator: PrototypeGenerator, items: pd.DataFrame, *,
                 embed_fn: Callable[[list[str]], np.ndarray] | None = None,
                 max_prototypes: int = 20, min_prototypes: int = 2, max_len: int = 60,
                 item_noun: str = "item", log_path: str | Path | None = None,
                 strict: bool = False, stop_full: bool = True) -> None:
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
        self.stop_full = bool(stop_full)
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

    @property
    def vectors(self) -> np.ndarray | None:
        """float32 ``(P, d)`` embeddings of the current prototypes (``None`` before the first
        update or without an embedder)."""
        return None if self._current is None else self._current.vectors

    def state_dict(self) -> dict:
        """The prototypes in force (names, vectors as a torch tensor, source, round), whether
        their vectors came from the backend, and the backend's own state (a run resumed from
        a checkpoint continues with them; torch tensors and plain values only)."""
        import torch

        cur = self._current
        return {"current": None if cur is None else {
                    "names": list(cur.names), "source": cur.source, "round": int(cur.round),
                    "vectors": None if cur.vectors is None
                    else torch.from_numpy(np.asarray(cur.vectors).copy())},
                "backend-vectors": bool(self._backend_vectors),
                "generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        cur = state["current"]
        self._current = None if cur is None else PrototypeSet(
            list(cur["names"]), None if cur["vectors"] is None else cur["vectors"].numpy().copy(),
            cur["source"], int(cur["round"]))
        self._backend_vectors = bool(state["backend-vectors"])
        self.generator.load_state_dict(state["generator"])

    def reembed(self) -> PrototypeSet:
        """Re-embed the current names with ``embed_fn`` (after the embedder changed, e.g. an
        encoder alignment); the names, source and round stay. The manager stays the one owner
        of the prototypes in force.

        Raises
        ------
        RuntimeError
            No prototypes yet, no ``embed_fn``, or the backend's own vectors are in force
            (cluster centroids are not text embeddings).
        """
        if self._current is None or self.embed_fn is None or self._backend_vectors:
            raise RuntimeError("reembed needs text prototypes in force and an embed_fn")
        self._current = replace(self._current, vectors=self._embed(self._current.names, None))
        return self._current

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
        """Ask the backend for new prototypes and return the set now in force
        (:meth:`request`, :meth:`ask` and :meth:`install` in one go).

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
        request = self.request(counts, item_embeddings)
        proposal, elapsed = self.ask(request)
        return self.install(server_round, request, proposal, elapsed)

    def request(self, counts=None, item_embeddings=None) -> PrototypeRequest:
        """The backend request for a revision of the prototypes now in force (``counts``
        int ``(P,)`` for them, ignored at the first call; ``item_embeddings`` float
        ``(N, d)`` for :class:`ClusterPrototypes`).

        Raises
        ------
        ValueError
            ``counts`` is not aligned with the current prototypes.
        """
        previous = self._current
        if counts is not None and previous is not None:
            counts = np.asarray(counts, dtype=np.int64).reshape(-1)
            if counts.shape[0] != len(previous.names):
                raise ValueError(f"counts has {counts.shape[0]} entries but there are "
                                 f"{len(previous.names)} current prototypes")
        else:
            counts = None
        return PrototypeRequest(
            items=self.items, max_prototypes=self.max_prototypes,
            previous=tuple(previous.names) if previous else (), counts=counts,
            item_embeddings=None if item_embeddings is None else np.asarray(item_embeddings),
            item_noun=self.item_noun, is_full=self.is_full if self.stop_full else None)

    def accept(self, names: list[str]) -> list[str]:
        """The names :meth:`install` keeps of parsed ``names``: item titles dropped, then
        :func:`validate_prototypes` with the manager's bounds.

        Raises
        ------
        PrototypeValidationError
            Fewer than ``min_prototypes`` usable names.
        """
        return validate_prototypes(self._not_titles(names), self.min_prototypes,
                                   self.max_prototypes, self.max_len)

    def is_full(self, names: list[str]) -> bool:
        """Whether :meth:`install` would already keep ``max_prototypes`` of these parsed names
        (item titles dropped, then :func:`validate_prototypes`), so later names could not
        change what it keeps."""
        return count_usable(self._not_titles(names), self.max_len) >= self.max_prototypes

    def _not_titles(self, names: list[str]) -> list[str]:
        """``names`` without those equal to an item title (see the class)."""
        return [n for n in names if n.casefold() not in self._titles]

    def ask(self, request: PrototypeRequest) -> tuple[PrototypeProposal, float]:
        """The backend's answer to ``request`` and the seconds it took. Reads and changes
        nothing of the manager but the backend's own state (its call counter), so it may run
        in another thread while the caller goes on (one request at a time)."""
        start = time.perf_counter()
        proposal = self.generator.propose(request)
        return proposal, time.perf_counter() - start

    def install(self, server_round: int, request: PrototypeRequest,
                proposal: PrototypeProposal, elapsed: float) -> PrototypeSet:
        """Validate ``proposal`` (the answer to ``request``, made from the prototypes in force
        then), embed the accepted names with ``embed_fn`` as it is now, log the call under
        ``server_round`` and put the result in force; falls back as the class describes.

        Raises
        ------
        PrototypeBackendError
            The backend failed and ``strict`` is set.
        PrototypeError
            Nothing usable at the first call and the item table has no genres.
        """
        previous = self._current
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
                try:
                    accepted = self.accept(proposal.names)
                except PrototypeValidationError as exc:
                    copied = [n for n in proposal.names if n.casefold() in self._titles]
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
            "stopped_full": proposal.stopped_full,
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
