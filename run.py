#!/usr/bin/env python
"""Run fedmm experiments through Flower's simulation engine (``flwr run``), one per seed.

    python run.py                                        # PFedRec on ML-100K, pyproject defaults
    python run.py --run-config "backbone='fedncf' num-server-rounds=50"
    python run.py --config conf/smoke.toml --out outputs/smoke --seeds 1 2 3

Options mirror ``flwr run``: ``--run-config`` overrides keys of ``[tool.flwr.app.config]``
(TOML values), ``--config FILE.toml`` loads a set of them (``--run-config`` wins), ``--out``
chooses the output directory, ``--seeds`` runs repeats and prints mean ± std. Each run writes
``<out>/<run-name>/{config.json,rounds.jsonl,final.json}``; the exit code is non-zero when any
run failed (``flwr run --stream`` itself exits 0 on failure, so success is judged by
``final.json``). ``--superlink CONNECTION`` runs on a deployed SuperLink instead (a connection in
``$FLWR_HOME/config.toml``; deploy/run.sh writes it). ``--engine inprocess`` runs the same
ServerApp and ClientApp code in this process without Ray (fedmm/inprocess.py: same metrics, for
sweeps on few cores). On ``--timeout`` or Ctrl-C the Flower run
itself is stopped (``flwr stop``) and its directory gets ``failed.json``.

``--resume RUN_DIR`` continues an interrupted run from its last checkpoint (run-config key
``checkpoint-every``) with the config in ``RUN_DIR/config.json``, in the same directory:

    python run.py --engine inprocess --resume outputs/20260101-120000-ml-100k-pfedrec-base-s0
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
#: fedmm's top-level packages: a directory holding one of them shadows this checkout's code.
PACKAGES = ("fedmm", "clients", "strategies", "server_tasks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-config", "-c", default="", help='overrides, e.g. "backbone=\'fedncf\' seed=1"')
    p.add_argument("--config", action="append", default=[], help="TOML file of overrides (repeatable)")
    p.add_argument("--out", default=None, help="output directory (default: run-config out-dir)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run once per seed")
    p.add_argument("--federation-config", default="",
                   help="extra flwr --federation-config entries (num-supernodes is set for you)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per run before the Flower run is stopped (flwr stop) and marked failed")
    p.add_argument("--superlink", default=None, metavar="CONNECTION",
                   help="run on this deployed SuperLink (a connection in $FLWR_HOME/config.toml) "
                        "instead of the simulation engine; see deploy/run.sh")
    p.add_argument("--engine", choices=("simulation", "inprocess"), default="simulation",
                   help="simulation: flwr run on Flower's Ray engine (default); inprocess: the same "
                        "ServerApp and ClientApp code in this one process, no Ray or SuperLink "
                        "(fedmm/inprocess.py; for sweeps on few cores)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its last checkpoint, with "
                        "the run config saved in RUN_DIR/config.json")
    args = p.parse_args(argv)
    if args.engine == "inprocess" and (args.superlink or args.federation_config or args.timeout):
        p.error("--engine inprocess takes no --superlink, --federation-config or --timeout")
    if args.resume is not None and (args.run_config or args.config or args.out or args.seeds):
        p.error("--resume takes no --run-config, --config, --out or --seeds: a resumed run is "
                "the same run, with the config in RUN_DIR/config.json")
    return args


def resolve_config(args: argparse.Namespace):
    """The merged run config: ``(raw, typed)``: the raw hyphenated mapping that ``flwr run``
    receives, and its validated :class:`~fedmm.config.RunConfig` (read once, here).

    Raises
    ------
    fedmm.config.ConfigError
        An unknown key or a bad value (the message names it); nothing has started yet.
    """
    from fedmm.config import (RunConfig, load_app_config, load_toml_overrides, merge_overrides,
                              parse_kv_overrides)

    cfg = load_app_config(APP_DIR / "pyproject.toml")
    for path in args.config:
        cfg = merge_overrides(cfg, load_toml_overrides(path), f"--config {path}")
    if args.run_config:
        cfg = merge_overrides(cfg, parse_kv_overrides(args.run_config), "--run-config")
    if args.out is not None:
        cfg["out-dir"] = args.out
    cfg["out-dir"] = str(Path(cfg["out-dir"]).expanduser().resolve())
    if cfg["cache-dir"]:
        cfg["cache-dir"] = str(Path(cfg["cache-dir"]).expanduser().resolve())
    if cfg["client-state-dir"]:
        cfg["client-state-dir"] = str(Path(cfg["client-state-dir"]).expanduser().resolve())
    return cfg, validate_config(cfg)


def validate_config(cfg: dict):
    """The typed :class:`~fedmm.config.RunConfig` of the raw ``cfg``, the method's section
    checked too (raises :class:`~fedmm.config.ConfigError`)."""
    from fedmm.config import RunConfig

    rc = RunConfig.from_mapping(cfg)  # fail fast, before any process starts
    # The method's own section too (the ServerApp reads it again; a bad value must not wait
    # for Flower to start).
    if rc.method == "gfmfr":
        from strategies.gfmfr import GFMFRConfig

        GFMFRConfig.from_mapping(cfg)
    elif rc.method == "fedsllm":
        from strategies.fedsllm import FedSLLMConfig

        FedSLLMConfig.from_mapping(cfg)
    return rc


class ResumeError(ValueError):
    """``--resume RUN_DIR`` cannot continue that directory (nothing was changed)."""


def resume_config(run_dir: str | Path):
    """The raw and typed run config that continues ``run_dir``: its ``config.json`` (keys
    declared in pyproject.toml; keys it lacks, added to fedmm since, take their defaults, with
    a warning) with ``resume-round`` = the round of its checkpoint.

    Raises
    ------
    ResumeError
        ``run_dir`` is not a directory, is complete (``final.json``), has no checkpoint, or its
        config cannot be loaded or names another directory (the run was moved).
    """
    from fedmm.checkpoint import checkpoint_round
    from fedmm.config import PRE_KEY_BEHAVIOUR, ConfigError, load_app_config

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ResumeError(f"{run_dir} is not a directory")
    if (run_dir / "final.json").exists():
        raise ResumeError(f"{run_dir} has final.json: that run is complete; nothing to resume")
    from fedmm.outputs import writer_pid

    pid = writer_pid(run_dir)
    if pid is not None:
        raise ResumeError(f"{run_dir} is still being written by another process (pid {pid}): "
                          "a run that was stopped and has not ended yet, or one still going; "
                          "wait until it exits, then resume")
    k = checkpoint_round(run_dir)
    if k is None:
        raise ResumeError(f"{run_dir} has no checkpoint ({run_dir}/checkpoint/checkpoint.json): "
                          "the run had checkpoint-every = 0 or stopped before its first "
                          "checkpoint; start it again instead")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{run_dir}/config.json cannot be loaded: {exc}") from None
    defaults = load_app_config(APP_DIR / "pyproject.toml")
    missing = sorted(set(defaults) - set(saved))
    if missing:
        legacy = {k_: PRE_KEY_BEHAVIOUR[k_] for k_ in missing if k_ in PRE_KEY_BEHAVIOUR}
        print(f"warning: {run_dir}/config.json lacks {missing} (keys added to fedmm since); "
              f"their defaults are used" + (f", except {legacy}: what fedmm did before the key "
                                             "existed" if legacy else ""), file=sys.stderr)
    cfg = {k_: saved.get(k_, PRE_KEY_BEHAVIOUR.get(k_, v)) for k_, v in defaults.items()}
    cfg["resume-round"] = k
    target = Path(cfg["out-dir"]).expanduser().resolve() / str(cfg["run-name"])
    if target != run_dir:
        raise ResumeError(f"{run_dir}/config.json names the run directory {target}: resume the "
                          "run where it was written (a moved run directory is not supported)")
    try:
        return cfg, validate_config(cfg)
    except ConfigError as exc:
        raise ResumeError(f"{run_dir}/config.json cannot be loaded: {exc}") from None


def foreign_superlink(app_dir: Path = APP_DIR, proc: Path = Path("/proc")) -> tuple[int, Path] | None:
    """A running simulation SuperLink that would run another checkout's ClientApp code.

    ``flwr run`` reuses a local SuperLink that is already running (it outlives the command).
    Its simulation's Ray workers inherit the SuperLink's working directory and import
    ``clients``/``fedmm``/... from there before the submitted app, so a SuperLink started in
    another fedmm checkout silently trains this run's clients with that checkout's code (the
    ServerApp side does use this checkout's). Linux only (reads ``/proc``); elsewhere None.

    Returns
    -------
    tuple of (int, pathlib.Path) or None
        PID and working directory of such a SuperLink: one started with ``--simulation`` whose
        working directory is not ``app_dir`` and holds one of :data:`PACKAGES`.
    """
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
        names = [Path(a.decode(errors="replace")).name for a in argv]
        if "flower-superlink" not in names or b"--simulation" not in argv:
            continue
        if cwd.resolve() != app_dir.resolve() and any((cwd / pkg).is_dir() for pkg in PACKAGES):
            return int(entry.name), cwd
    return None


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


#: Ray ships task arguments up to this size inline instead of through its object store:
#: model payloads (~0.2-0.5 MB) then skip Ray's object store, which made evaluation about 3x
#: faster (docs/benchmark.md). ``RAY_max_direct_call_object_size`` in :data:`RAY_ENV`.
RAY_INLINE_BYTES = 4 * 1024 * 1024

#: Ray settings a run's Ray instance starts with (environment, read when Ray starts; a value
#: already in the environment wins). Inline task arguments (above); and no task events: Ray
#: otherwise records every actor call (one per message) for its dashboard's task list in the
#: GCS server, which grew to ~400 MiB over a 200-round ML-1M run (docs/benchmark.md, "Ray's
#: task events"); fedmm starts Ray without the dashboard, so nothing reads them.
RAY_ENV = {"RAY_max_direct_call_object_size": str(RAY_INLINE_BYTES),
           "RAY_task_events_report_interval_ms": "0"}


def flwr_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FLWR_HOME", str(APP_DIR / ".flwr"))
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    # Read when the local SuperLink starts, so it is set here.
    for key, value in RAY_ENV.items():
        env.setdefault(key, value)
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def mark_failed(run_dir: Path, reason: str, create: bool = False) -> None:
    """Write ``failed.json`` into a run directory the run left without ``final.json`` (a
    ServerApp error leaves only ``config.json``), so no one mistakes it for a run in progress.
    ``create``: make the directory if the ServerApp has not yet (a run stopped early), which also
    keeps a ServerApp that was not stopped from writing results there later."""
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    if run_dir.is_dir() and not (run_dir / "final.json").exists():
        (run_dir / "failed.json").write_text(json.dumps({"status": "failed", "reason": reason}, indent=2))


#: Sub-directory of a run directory where run.py has the ClientApps keep their private state.
CLIENT_STATE = "client-state"


def set_aside_failure(run_dir: Path) -> None:
    """Before resuming ``run_dir``: rename the ``failed.json`` of the interrupted attempt to
    ``failed-<n>.json`` (kept as its record; a ``failed.json`` left after the resumed run is
    then that run's own)."""
    failed = run_dir / "failed.json"
    if failed.is_file():
        n = 1
        while (run_dir / f"failed-{n}.json").exists():
            n += 1
        os.replace(failed, run_dir / f"failed-{n}.json")


class RunInterrupted(RuntimeError):
    """Ctrl-C during a run: it was stopped and marked failed; no further seed is started."""


#: ``flwr run`` prints this once the SuperLink accepted the run (flwr/cli/run/run.py).
STARTED_RUN = re.compile(r"Successfully started run (\d+)")


def _flwr_tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def stop_run(run_id: int, superlink: str | None, env: dict[str, str]) -> str:
    """``flwr stop RUN_ID [CONNECTION]`` (the SuperLink that ``flwr run`` used); returns what
    happened, for ``failed.json`` and the log."""
    cmd = [_flwr_tool("flwr"), "stop", str(run_id)] + ([superlink] if superlink else [])
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(cmd[1:])}` did not answer within 120 s; the Flower run may go on"
    if p.returncode == 0:
        return f"Flower run {run_id} stopped (flwr stop)"
    return (f"`{' '.join(cmd[1:])}` failed (exit {p.returncode}): "
            f"{(p.stdout + p.stderr).strip()[-400:]}; the Flower run may go on")


def stream_flwr(cmd: list[str], env: dict[str, str], timeout: float | None,
                superlink: str | None) -> tuple[int, str | None]:
    """Run ``cmd`` (``flwr run ... --stream``), echoing its output as it comes and reading the
    run id from it. On ``timeout`` seconds or Ctrl-C, stops the Flower run itself (``flwr stop``)
    and ends ``cmd``.

    Returns
    -------
    tuple of (int, str or None)
        ``cmd``'s exit code, and why the run was cut short (None when it was not).
    """
    # cwd: a local SuperLink that `flwr run` starts keeps it; a temporary one (a test's tmp_path)
    # is deleted under it later, and its simulations then fail ("No heartbeat received").
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", cwd=APP_DIR)
    run_id: list[int] = []

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if not run_id and (m := STARTED_RUN.search(line)):
                run_id.append(int(m.group(1)))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
        reader.join(timeout=10)
        return rc, None
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        why = (f"exceeded --timeout {timeout}s" if isinstance(exc, subprocess.TimeoutExpired)
               else "interrupted (Ctrl-C)")
        print(f"fedmm: run {why}; stopping it ...", file=sys.stderr, flush=True)
        note = (stop_run(run_id[0], superlink, env) if run_id
                else "flwr had printed no run id yet, so no Flower run was stopped")
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"fedmm: {note}", file=sys.stderr, flush=True)
        return proc.returncode, f"{why}; {note}"


#: Seconds run.py waits for a stopped run's ServerApp process to end (it notices the stop
#: within seconds on Flower 1.42's simulation engine, and may finish its round first).
STOP_WAIT = 180.0


def wait_for_stopped_run(run_dir: Path, why: str, timeout: float = STOP_WAIT) -> str:
    """After ``flwr stop``: wait until the run's ServerApp process no longer writes
    ``run_dir`` (:func:`fedmm.outputs.wait_for_writer`), so that the directory is marked
    failed, and can be resumed, only once nothing writes it any more. Returns ``why``, with a
    note when the process was still writing after ``timeout`` s."""
    from fedmm.outputs import wait_for_writer, writer_pid

    if writer_pid(run_dir) is None:
        return why
    print(f"fedmm: waiting for the stopped run's ServerApp to end (it still writes {run_dir}) ...",
          file=sys.stderr, flush=True)
    pid = wait_for_writer(run_dir, timeout)
    if pid is None:
        return why
    return (f"{why}; its ServerApp (pid {pid}) still wrote {run_dir} {timeout:.0f} s after the "
            "stop")


def federation_entries(num_users: int, extra: str) -> str:
    """The ``--federation-config`` string: one node per user and 1 CPU per client actor,
    unless ``extra`` (the user's entries, ``key=value`` separated by spaces) sets them; flwr
    refuses a key given twice."""
    entries = {"num-supernodes": str(num_users), "client-resources-num-cpus": "1"}
    for item in extra.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--federation-config: '{item}' is not key=value")
        if key == "num-supernodes" and value != str(num_users):
            raise SystemExit(f"--federation-config: num-supernodes={value}, but the dataset "
                             f"has {num_users} users and each is one node; leave it out")
        entries[key] = value
    return " ".join(f"{k}={v}" for k, v in entries.items())


def run_one(cfg: dict, rc, num_users: int, federation_config: str, timeout: float | None,
            superlink: str | None = None, resume: bool = False) -> dict:
    """One ``flwr run`` of the raw config ``cfg`` (typed: ``rc``); returns the run's final.json.

    Simulation (``num_users`` SuperNodes) unless ``superlink`` names a deployed SuperLink's
    connection in ``$FLWR_HOME/config.toml``.

    Raises
    ------
    RuntimeError
        The run failed, timed out or was interrupted (its directory then holds ``failed.json``;
        a ``final.json`` already written is kept).
    """
    run_dir = Path(rc.out_dir) / rc.run_name
    if run_dir.exists() and not resume:
        raise RuntimeError(f"{run_dir} exists already; results are never overwritten")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        for k, v in cfg.items():
            fh.write(f"{k} = {_toml_value(v)}\n")
        conf_path = fh.name
    cmd = [_flwr_tool("flwr"), "run", str(APP_DIR)]
    if superlink:
        cmd += [superlink, "--run-config", conf_path, "--stream"]
    else:
        fed = federation_entries(num_users, federation_config)
        cmd += ["--run-config", conf_path, "--federation-config", fed, "--stream"]
    print(f"$ {' '.join(cmd)}", flush=True)
    try:
        code, cut_short = stream_flwr(cmd, flwr_env(), timeout, superlink)
    finally:
        os.unlink(conf_path)
    final = run_dir / "final.json"
    if cut_short is not None:
        cut_short = wait_for_stopped_run(run_dir, cut_short)
    if cut_short is not None and final.is_file():
        print(f"fedmm: {final} was written before the run was stopped; keeping it", flush=True)
    elif cut_short is not None:
        mark_failed(run_dir, cut_short, create=True)
        error = RunInterrupted if cut_short.startswith("interrupted") else RuntimeError
        raise error(f"run {rc.run_name} {cut_short}")
    if code != 0 or not final.is_file():
        reason = (f"flwr exit code {code}, {'no' if not final.is_file() else 'a'} "
                  f"{final}; see the log above")
        mark_failed(run_dir, reason)
        raise RuntimeError(f"run {rc.run_name} failed ({reason})")
    return json.loads(final.read_text())


def run_one_inprocess(cfg: dict, rc, num_users: int, resume: bool = False) -> dict:
    """One run of the raw config ``cfg`` (typed: ``rc``) on the in-process engine
    (:mod:`fedmm.inprocess`); returns its final.json.

    Raises
    ------
    RuntimeError
        The run failed (its directory then holds ``failed.json``).
    RunInterrupted
        Ctrl-C (the directory is marked failed).
    """
    from fedmm.inprocess import run_inprocess

    run_dir = Path(rc.out_dir) / rc.run_name
    if run_dir.exists() and not resume:
        raise RuntimeError(f"{run_dir} exists already; results are never overwritten")
    print(f"fedmm: in-process engine, {num_users} nodes", flush=True)
    try:
        run_inprocess(cfg, num_users)
    except KeyboardInterrupt:
        mark_failed(run_dir, "interrupted (Ctrl-C)", create=True)
        raise RunInterrupted(f"run {rc.run_name} interrupted (Ctrl-C)") from None
    except Exception as exc:
        import traceback

        traceback.print_exc()
        mark_failed(run_dir, f"{type(exc).__name__}: {exc}")
        raise RuntimeError(f"run {rc.run_name} failed ({type(exc).__name__}: {exc})") from exc
    return json.loads((run_dir / "final.json").read_text())


def with_reference(rc, data, final: dict) -> dict:
    """Compute the MostPop and centralised rows of ``rc`` (a RunConfig; fedmm/reference.py),
    add them to the run's final.json and print the three rows side by side."""
    from fedmm.factory import set_threads
    from fedmm.outputs import add_reference, format_table
    from fedmm.reference import reference_rows

    set_threads(rc)
    print("fedmm: reference rows (mostpop; centralised, cached after the first run) ...", flush=True)
    ref = reference_rows(rc, data, log=lambda s: print(s, flush=True))
    final = add_reference(Path(rc.out_dir) / rc.run_name, ref)
    print(format_table(final), flush=True)
    return final


def mean_std_table(finals: list[dict]) -> str:
    keys = list(finals[0]["test"])
    lines = [f"{len(finals)} seeds, test metrics at the best validation round (mean ± std):"]
    for k in keys:
        vals = [f["test"][k] for f in finals]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(f"  {k:<20} {statistics.mean(vals):.4f} ± {sd:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    foreign = None if args.superlink or args.engine == "inprocess" else foreign_superlink()
    if foreign is not None:
        pid, cwd = foreign
        print(f"error: a local Flower SuperLink (pid {pid}) started in {cwd} is running; "
              f"flwr run would reuse it and its clients would import the code in {cwd}, not "
              f"{APP_DIR}. Stop it (kill {pid}; its flower-superexec child exits with it) and "
              "rerun; no run was started.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(APP_DIR))
    from fedmm.config import ConfigError
    from fedmm.data.raw import DataError
    from fedmm.data.split import load_federated

    try:
        cfg, rc = resume_config(args.resume) if args.resume else resolve_config(args)
        data = load_federated(rc.dataset, rc.rating_threshold, rc.min_interactions, rc.cache_dir, rc.split_ties)
    except (ConfigError, DataError, ResumeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.resume:
        jobs = [(cfg, rc)]
        base_name = rc.run_name
        print(f"fedmm: resuming {Path(rc.out_dir) / rc.run_name} after its checkpoint of round "
              f"{rc.resume_round} (of {rc.num_server_rounds})", flush=True)
    else:
        base_name = rc.run_name or (f"{stamp}-{re.sub(r'[^A-Za-z0-9_-]', '_', data.name)}-"
                                    f"{rc.backbone}-{rc.method}")
        jobs = []
        for seed in (args.seeds if args.seeds else [rc.seed]):
            name = f"{base_name}-s{seed}"
            run_cfg = dict(cfg, seed=seed, **{"run-name": name})
            # Checkpoints need the clients' private state too: on the engines that run every
            # client on this machine it goes under the run directory.
            if rc.checkpoint_every and not rc.client_state_dir and not args.superlink:
                run_cfg["client-state-dir"] = str(Path(rc.out_dir) / name / CLIENT_STATE)
            jobs.append((run_cfg, validate_config(run_cfg)))
    finals, failed = [], []
    for run_cfg, run_rc in jobs:
        run_dir = Path(run_rc.out_dir) / run_rc.run_name
        try:
            if args.resume:
                set_aside_failure(run_dir)
            if args.engine == "inprocess":
                final = run_one_inprocess(run_cfg, run_rc, data.num_users, resume=bool(args.resume))
            else:
                final = run_one(run_cfg, run_rc, data.num_users, args.federation_config,
                                args.timeout, args.superlink, resume=bool(args.resume))
            if Path(run_rc.client_state_dir or "/nonexistent") == run_dir / CLIENT_STATE:
                shutil.rmtree(run_dir / CLIENT_STATE, ignore_errors=True)  # complete: not needed
            finals.append(with_reference(run_rc, data, final))
        except RunInterrupted as exc:
            print(f"error: {exc}; no further seed started", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(run_rc.seed)
    if len(finals) > 1:
        print(mean_std_table(finals))
    if finals and (len(finals) > 1 or args.seeds):
        summary = Path(rc.out_dir) / f"{base_name}-summary.json"
        if summary.exists():  # never overwrite an earlier result
            summary = summary.with_name(f"{base_name}-summary-{stamp}.json")
        summary.write_text(json.dumps({"seeds": [f["seed"] for f in finals], "finals": finals}, indent=2))
        print(f"summary: {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
