"""Run directories: resolved config, per-round JSON lines, final metrics. Nothing is overwritten
(a resumed run only drops the rounds after its checkpoint from ``rounds.jsonl``, to redo them)."""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the writer check is skipped there
    fcntl = None  # type: ignore[assignment]

#: File in a run directory that the process writing it holds an exclusive ``flock`` on.
WRITER_LOCK = ".writer.lock"


class OutputError(FileExistsError):
    """The run directory exists already: results are never overwritten."""


def new_run_dir(out_dir: str | Path, run_name: str = "", tag: str = "run") -> Path:
    """Create and return a fresh run directory under ``out_dir``.

    ``run_name`` given: ``out_dir/run_name`` must not exist yet. Empty: a unique
    ``<YYYYmmdd-HHMMSS>-<tag>[-N]`` is chosen.
    """
    root = Path(out_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if run_name:
        path = root / run_name
        try:
            path.mkdir()
        except FileExistsError:
            raise OutputError(f"run directory {path} exists already; results are never overwritten: "
                              f"pick another --out or run-name") from None
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{stamp}-{tag}" + (f"-{i}" if i else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OutputError(f"could not create a fresh run directory under {root}")


class RunDirBusy(RuntimeError):
    """Another live process is still writing the run directory (nothing was changed)."""


def writer_pid(run_dir: str | Path) -> int | None:
    """The pid of the live process that holds ``run_dir``'s writer lock (see
    :func:`hold_run_dir`), or None when no process does (or the platform has no ``flock``).
    0 when it is held but the pid was not written yet."""
    path = Path(run_dir) / WRITER_LOCK
    if fcntl is None or not path.is_file():
        return None
    with open(path, "r+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


@contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir``'s writer lock while the block runs (the OS drops it when the process
    ends, however it ends), with this process's pid in the lock file.

    A run stopped with ``flwr stop`` can go on for seconds in its simulation process: the lock
    lets run.py wait for that process to end before it marks the directory failed, and keeps a
    ``--resume`` from writing the directory while the stopped process still does.

    Raises
    ------
    RunDirBusy
        Another process holds it.
    """
    if fcntl is None:
        yield
        return
    fh = open(Path(run_dir) / WRITER_LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            raise RunDirBusy(f"{run_dir} is being written by another process (pid {pid}), e.g. a "
                             "stopped run that has not ended yet; wait until it exits, then try "
                             "again (nothing was changed)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def wait_for_writer(run_dir: str | Path, timeout: float, poll: float = 0.5) -> int | None:
    """Wait up to ``timeout`` s until no process writes ``run_dir`` (:func:`writer_pid`);
    returns None when none does, else the pid still writing it."""
    deadline = time.monotonic() + timeout
    while (pid := writer_pid(run_dir)) is not None and time.monotonic() < deadline:
        time.sleep(poll)
    return pid


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


class RunRecorder:
    """Writes ``config.json``, ``rounds.jsonl`` (one line per round, flushed as it happens)
    and ``final.json`` into one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def write_config(self, config: dict[str, Any]) -> None:
        _atomic_json(self.run_dir / "config.json", config)

    def log_round(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "rounds.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=float) + "\n")

    def rewind(self, last_round: int) -> int:
        """Drop the lines of rounds after ``last_round`` from ``rounds.jsonl`` (a resumed run
        redoes them); returns how many."""
        from fedmm.checkpoint import truncate_jsonl

        return truncate_jsonl(self.run_dir / "rounds.jsonl", last_round)

    def write_final(self, final: dict[str, Any]) -> None:
        _atomic_json(self.run_dir / "final.json", final)


def split_metrics(metrics: dict[str, float], split: str) -> dict[str, float]:
    """``{"test_full_hr@10": x}`` -> ``{"full_hr@10": x}`` for ``split="test"``."""
    prefix = f"{split}_"
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


def summarize(history: list[dict[str, Any]], best: dict[str, Any] | None, select_metric: str,
              wall_seconds: float) -> dict[str, Any]:
    """The content of ``final.json`` (see README, "Outputs")."""
    if best is None:
        raise RuntimeError("no evaluation round happened; nothing to report")
    evals = [r for r in history if "eval-users" in r]
    last = evals[-1]
    secs = [r["train-seconds"] for r in history if "train-seconds" in r]
    return {
        "status": "ok",
        "select_metric": select_metric,
        "best_round": best["round"],
        "test": split_metrics(best, "test"),
        "valid": split_metrics(best, "valid"),
        "last_round": last["round"],
        "last_test": split_metrics(last, "test"),
        "last_valid": split_metrics(last, "valid"),
        "eval_users": int(last["eval-users"]),
        "rounds": len(history),
        "wall_seconds": wall_seconds,
        "median_train_round_seconds": statistics.median(secs) if secs else None,
        "median_eval_seconds": statistics.median([r["eval-seconds"] for r in evals]),
    }


def format_table(final: dict[str, Any]) -> str:
    """A small text table of the test metrics at the selected round; with ``final["reference"]``
    (written by ``run.py``) the MostPop floor and the centralised ceiling are rows beside it."""
    test = final["test"]
    protocols = sorted({k.split("_")[0] for k in test})
    ks = sorted({int(k.split("@")[1]) for k in test})
    rows = [("federated", test)]
    ref = final.get("reference", {})
    if "mostpop" in ref:
        rows.insert(0, ("mostpop", ref["mostpop"]["test"]))
    if "centralised" in ref:
        rows.append(("centralised", ref["centralised"]["test"]))
    lines = [f"best round {final['best_round']} (by {final['select_metric']}), "
             f"{final['eval_users']} users, test metrics:",
             f"{'row':<12}{'protocol':<10}" + "".join(f"{f'HR@{k}':>9}{f'NDCG@{k}':>10}" for k in ks)]
    for name, metrics in rows:
        for p in protocols:
            lines.append(f"{name:<12}{p:<10}" + "".join(
                f"{metrics[f'{p}_hr@{k}']:>9.4f}{metrics[f'{p}_ndcg@{k}']:>10.4f}" for k in ks))
    return "\n".join(lines)


def add_reference(run_dir: Path, reference: dict[str, Any]) -> dict[str, Any]:
    """Add the floor/ceiling rows to ``run_dir/final.json`` (atomically) and return it."""
    path = Path(run_dir) / "final.json"
    final = json.loads(path.read_text())
    final["reference"] = reference
    _atomic_json(path, final)
    return final
