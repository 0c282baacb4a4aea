"""Checkpoints of a long run, and the clients' private state on disk (``run.py --resume``).

Server side (:func:`save_checkpoint`, :func:`load_checkpoint`): every ``checkpoint-every``
rounds (and after the last round) the strategy writes ``<run-dir>/checkpoint/``:

* ``arrays-r<k>.npz`` — the global arrays after round ``k`` (``np.savez``);
* ``strategy-r<k>.pt`` — the strategy's state (:meth:`FedRecStrategy.state_dict
  <strategies.base.FedRecStrategy.state_dict>`: sampling RNG, history, best round, global
  RNG states and the method's server state, e.g. GFMFR's groups and fusion module), written
  with ``torch.save`` and read back with ``torch.load(weights_only=True)`` (tensors and plain
  containers only, no pickled objects);
* ``checkpoint.json`` — ``{"round": k, "arrays": ..., "strategy": ..., ...}``, replaced
  atomically last: it names the two files of the checkpoint in force. Files of older
  checkpoints are deleted only after it is replaced, so a crash at any moment leaves a
  complete checkpoint (the new one or the previous one).

Client side (:class:`ClientStateStore`): with ``client-state-dir`` set, a ClientApp keeps its
user's private state (``clients/*.private_state``) in ``<dir>/user-<u>.npz`` after every
training round, atomically, plus the state a resumed run needs in ``user-<u>.ckpt.npz`` (see
:meth:`ClientStateStore.save`). A resumed run (``resume-round = k``) loads the newest saved
state trained in a round ``<= k``: the state the node held when the server checkpointed round
``k``.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Sub-directory of a run directory holding the server checkpoint.
CHECKPOINT_DIR = "checkpoint"
#: The file that names the checkpoint in force.
CHECKPOINT_FILE = "checkpoint.json"
#: Key of the save round inside a client-state ``.npz``.
ROUND_KEY = "__round__"


class CheckpointError(RuntimeError):
    """No usable checkpoint (missing, incomplete, or not the one asked for)."""


# ----- atomic writes -----------------------------------------------------------------------
def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync, then ``os.replace``: a
    crash leaves either the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_default(value: Any) -> Any:
    """``json.dumps`` ``default`` for NumPy scalars and arrays (ints stay ints)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def atomic_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n").encode()
    atomic_write_bytes(path, lambda fh: fh.write(data))


def atomic_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write_bytes(path, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()}))


def truncate_jsonl(path: Path, last_round: int) -> int:
    """Drop the lines of ``path`` (JSON lines) whose ``"round"`` is after ``last_round``
    (atomically); lines without a round are kept. Returns how many lines were dropped; a
    missing file is left missing."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line).get("round")
        except (json.JSONDecodeError, AttributeError):
            r = None  # a line cut by the crash: it belongs to a round being redone
            dropped += 1
            continue
        if isinstance(r, (int, float)) and r > last_round:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        data = "".join(f"{line}\n" for line in keep).encode()
        atomic_write_bytes(path, lambda fh: fh.write(data))
    return dropped


# ----- global RNG states (as tensors and plain values, for torch.load(weights_only=True)) --
def rng_state() -> dict[str, Any]:
    """The process-wide RNG states: Python's ``random``, NumPy's legacy global, torch's CPU."""
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                      float(cached)],
            "torch": torch.get_rng_state()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """numpy arrays -> torch tensors (same dtype and values), for a state dict."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in arrays.items()}


def to_numpy(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of :func:`to_tensors`."""
    return {k: v.numpy() for k, v in tensors.items()}


# ----- server checkpoint -------------------------------------------------------------------
def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_round(run_dir: Path) -> int | None:
    """Round of the checkpoint in force under ``run_dir`` (None: there is none)."""
    path = checkpoint_dir(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return int(json.loads(path.read_text())["round"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def save_checkpoint(run_dir: Path, server_round: int, arrays: Mapping[str, np.ndarray],
                    state: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> Path:
    """Write the checkpoint of round ``server_round`` (see the module docstring); returns its
    ``checkpoint.json``."""
    import torch

    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    r = int(server_round)
    names = {"arrays": f"arrays-r{r}.npz", "strategy": f"strategy-r{r}.pt"}
    atomic_npz(root / names["arrays"], arrays)
    atomic_write_bytes(root / names["strategy"], lambda fh: torch.save(dict(state), fh))
    atomic_json(root / CHECKPOINT_FILE, {**dict(info or {}), "round": r, **names})
    for old in root.iterdir():  # older checkpoints, and temporaries of a crashed write
        if old.name not in (CHECKPOINT_FILE, *names.values()):
            old.unlink()
    return root / CHECKPOINT_FILE


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, np.ndarray], dict[str, Any]]:
    """``(round, global arrays, strategy state)`` of the checkpoint in force.

    Raises
    ------
    CheckpointError
        There is none, or its files are missing or unreadable.
    """
    import torch

    root = checkpoint_dir(run_dir)
    path = root / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint ({path} is missing): the run was "
                              f"started with checkpoint-every = 0 or stopped before its first "
                              f"checkpoint")
    try:
        meta = json.loads(path.read_text())
        with np.load(root / meta["arrays"]) as npz:
            arrays = {k: npz[k] for k in npz.files}
        state = torch.load(root / meta["strategy"], weights_only=True)
        return int(meta["round"]), arrays, state
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}"
                              ) from exc


# ----- clients' private state --------------------------------------------------------------
class ClientStateStore:
    """One user's private state on disk, in the run's ``client-state-dir``.

    Two files: ``user-<u>.npz`` (the latest state, after the user's last training round) and
    ``user-<u>.ckpt.npz`` (the state the user held at the last server checkpoint before that
    round, written when a training round crosses a checkpoint round). Each holds the arrays of
    ``private_state()`` and ``__round__`` (the round it was trained in). The server
    checkpoints after rounds ``c = k * checkpoint_every`` (and after the last round, after
    which no one trains); a resumed run from round ``c`` needs, per user, the state trained in
    its latest round ``<= c``: :meth:`load`.

    Parameters
    ----------
    directory : str or pathlib.Path
    user : int
    checkpoint_every : int
        The run's ``checkpoint-every`` (0: no checkpoints; only the latest state is kept).
    """

    def __init__(self, directory: str | Path, user: int, checkpoint_every: int) -> None:
        self.dir = Path(directory).expanduser()
        self.user = int(user)
        self.every = int(checkpoint_every)
        self.latest = self.dir / f"user-{self.user}.npz"
        self.ckpt = self.dir / f"user-{self.user}.ckpt.npz"

    @staticmethod
    def _read(path: Path) -> tuple[int, dict[str, np.ndarray]] | None:
        if not path.is_file():
            return None
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return int(arrays.pop(ROUND_KEY)), arrays

    def _write(self, path: Path, server_round: int, arrays: Mapping[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_npz(path, {**arrays, ROUND_KEY: np.asarray(int(server_round), np.int64)})

    def clear(self) -> None:
        """Remove this user's files (a fresh run must not inherit another run's state)."""
        for path in (self.ckpt, self.latest):
            if path.exists():
                path.unlink()

    def save(self, server_round: int, arrays: Mapping[str, np.ndarray], previous_round: int | None,
             previous: Mapping[str, np.ndarray] | None) -> None:
        """Save the state trained in ``server_round``; ``previous`` is the state this node held
        before (trained in ``previous_round``; None: it had none in this run).

        If a checkpoint round ``c`` lies in ``[previous_round, server_round)``, ``previous`` is
        the state of checkpoint ``c`` and goes to the checkpoint file first (none: that file
        is removed). Then the latest file is replaced. Each write is atomic.
        """
        r = int(server_round)
        if self.every > 0:
            c = ((r - 1) // self.every) * self.every   # last checkpoint round before r
            if previous is None or previous_round is None or previous_round < 0:
                if self.ckpt.exists():
                    self.ckpt.unlink()
            elif c >= 1 and c >= previous_round:
                self._write(self.ckpt, previous_round, previous)
        self._write(self.latest, r, arrays)

    def load(self, at_most_round: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """The newest saved state trained in a round ``<= at_most_round``: ``(round, arrays)``,
        or None when the user had none then.

        Raises
        ------
        CheckpointError
            Only states of later rounds are on disk, and a checkpoint-round state too (the
            directory does not belong to this run's checkpoint).
        """
        for path in (self.latest, self.ckpt):
            found = self._read(path)
            if found is None:
                return None
            if found[0] <= at_most_round:
                return found
        raise CheckpointError(f"{self.ckpt} holds user {self.user}'s state of round {found[0]}, "
                              f"after the checkpoint round {at_most_round}: this client-state "
                              f"directory does not belong to that checkpoint")
