"""Device selection shared by clients, strategies and server tasks (torch only, no Flower)."""
from __future__ import annotations

import functools
import warnings

import torch


@functools.lru_cache(maxsize=1)
def _has_accelerator() -> bool:
    """Whether torch sees a CUDA, MPS or XPU device (checked once per process)."""
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return bool(torch.cuda.is_available() or (mps is not None and mps.is_available())
                or (xpu is not None and xpu.is_available()))


def seed_torch(seed: int) -> None:
    """``torch.manual_seed(seed)``, without its per-call cost where there is no accelerator.

    ``torch.manual_seed`` also schedules seeding of the CUDA/XPU/MTIA generators, each time
    recording the Python stack (``traceback.format_stack``): ~2 ms per call on this project's
    CPU machine, i.e. ~2 s of every all-user evaluation of ML-100K (943 model builds; measured
    with cProfile). Without an accelerator only the CPU generator matters, and seeding it alone
    gives the very same random stream; with one, this is ``torch.manual_seed``.
    """
    if _has_accelerator():
        torch.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(int(seed))


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
