"""Device selection shared by clients, strategies and server tasks (torch only, no Flower)."""
from __future__ import annotations

import warnings

import torch


def resolve_device(device: str) -> torch.device:
    """Return ``torch.device(device)``, falling back to CPU with a warning if CUDA is absent.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``.

    Returns
    -------
    torch.device
        The requested device, or ``cpu`` when a CUDA device was asked for and none is visible
        (Python's warning filter shows the ``RuntimeWarning`` once per call site).

    Raises
    ------
    RuntimeError
        From ``torch.device`` when ``device`` is not a device string.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device={device!r} requested but no CUDA device is visible; using cpu",
                      RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    return dev
