"""Averaging of client uploads on the server. No Flower import here."""
from __future__ import annotations


class ReplyError(ValueError):
    """A client reply cannot be aggregated; the message says which reply and why."""
