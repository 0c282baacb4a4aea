"""Exceptions of the FedSLLM prototype tasks. No Flower import here."""
from __future__ import annotations


class PrototypeError(RuntimeError):
    """No usable prototypes can be produced; the message says why and what to change."""


class PrototypeBackendError(PrototypeError):
    """A prototype backend (LLM load, HTTP server) failed; the message names the fix."""


class PrototypeValidationError(ValueError):
    """Too few prototypes survive :func:`validate_prototypes`."""
