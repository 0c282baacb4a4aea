"""fedmm's Flower strategies (Message API, ``flwr.serverapp.strategy``), for reuse in any
Flower project::

    from strategies import FedRecStrategy, GFMFR, FedSLLM

The message contract a ClientApp must follow is documented once, in :mod:`fedmm.protocol`.
Classes are imported on first access (PEP 562), so ``import strategies`` loads nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FedRecStrategy", "GFMFR", "GFMFRConfig", "FedSLLM", "FedSLLMConfig", "build_strategy"]

_WHERE = {"FedRecStrategy": "strategies.base", "GFMFR": "strategies.gfmfr",
          "GFMFRConfig": "strategies.gfmfr", "FedSLLM": "strategies.fedsllm",
          "FedSLLMConfig": "strategies.fedsllm", "build_strategy": "strategies.factory"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'strategies' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
