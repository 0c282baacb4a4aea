#!/usr/bin/env python
"""Speed benchmark: ML-100K, each backbone, 10% clients per round, through ``run.py``.

For each backbone it runs ``--rounds`` rounds (evaluation of all users at the last round) and
reports, from the run's ``rounds.jsonl``:

* median seconds per training round after warm-up (round 1, which starts Ray, is excluded);
* seconds for one full evaluation of all users through Flower (the last round's evaluate step);
* peak resident memory of all fedmm/Flower/Ray processes together (sampled every 0.5 s);
* in-process compute time to evaluate all users (no Flower: NumPyClient.evaluate in a loop).

    python bench/speed.py --rounds 12 --out bench/results/speed-cpu.json
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


#: Command-line marks of the Flower and Ray processes a run starts (the SuperLink, the simulation
#: process, Ray's daemons and actors). run.py itself is found by pid, not by name: another
#: run.py on the machine (an in-process run, say) is not part of the measured run.
RUN_PROCESS_MARKS = ("flwr", "flower-", "ray::", "raylet", "gcs_server", "ray/")


def run_processes(root: int | None = None) -> list[psutil.Process]:
    """The run's processes: ``root`` (the launched run.py) and its descendants, and every process
    whose command line carries one of :data:`RUN_PROCESS_MARKS`; each once."""
    found: dict[int, psutil.Process] = {}
    if root is not None:
        try:
            top = psutil.Process(root)
            for p in [top, *top.children(recursive=True)]:
                found[p.pid] = p
        except psutil.Error:
            pass
    for p in psutil.process_iter(["cmdline"]):
        if any(s in " ".join(p.info["cmdline"] or []) for s in RUN_PROCESS_MARKS):
            found.setdefault(p.pid, p)
    return list(found.values())


def process_memory(root: int | None = None) -> dict[int, tuple[str, int, int]]:
    """``pid -> (command line, RSS bytes, PSS bytes)`` of each of :func:`run_processes` that
    can still be read (PSS: shared pages split among the processes that map them)."""
    out = {}
    for p in run_processes(root):
        try:
            m, cmd = p.memory_full_info(), " ".join(p.cmdline())
        except (psutil.Error, OSError):
            continue
        out[p.pid] = (cmd, m.rss, m.pss)
    return out


def tree_memory(root: int | None = None) -> dict[str, int]:
    """Bytes over :func:`process_memory`: ``rss`` (sum of RSS), ``pss`` (sum of proportional
    set sizes, so the sum is what the run holds), ``largest`` (the largest single process's
    RSS)."""
    procs = process_memory(root).values()
    return {"rss": sum(v[1] for v in procs), "pss": sum(v[2] for v in procs),
            "largest": max((v[1] for v in procs), default=0)}


def inprocess_eval_seconds(backbone: str, device: str) -> float:
    from fedmm.config import RunConfig, load_app_config
    from fedmm.factory import build_client, data_for

    d = load_app_config(ROOT / "pyproject.toml")
    d.update(backbone=backbone, device=device)
    cfg = RunConfig.from_mapping(d)
    data = data_for(cfg)
    c0 = build_client(cfg, 0)
    params = c0.get_parameters({})
    t = time.perf_counter()
    for u in range(data.num_users):
        build_client(cfg, u).evaluate(params, {})
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--backbones", nargs="+", default=["fedmf", "fedncf", "pfedrec", "fedrap", "fedpergnn"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--federation-config", default="",
                    help="extra flwr federation entries, e.g. 'client-resources-num-gpus=0.25' "
                         "(4 client actors share one GPU)")
    ap.add_argument("--engine", default="simulation", choices=["simulation", "inprocess"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed-cpu.json"))
    args = ap.parse_args()
    results = {}
    outdir = ROOT / "outputs" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    for b in args.backbones:
        peak = {"rss": 0, "pss": 0, "largest": 0}
        stop = threading.Event()
        launched: list[int] = []

        def sample() -> None:
            while not stop.is_set():
                for k, v in tree_memory(launched[0] if launched else None).items():
                    peak[k] = max(peak[k], v)
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        cmd = [sys.executable, str(ROOT / "run.py"), "--out", str(outdir), "--run-config",
               f"backbone='{b}' num-server-rounds={args.rounds} eval-every={args.rounds} "
               f"device='{args.device}' run-name='{b}' centralised-epochs=0",
               "--engine", args.engine]
        if args.federation_config:
            cmd += ["--federation-config", args.federation_config]
        t = time.time()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as popen:
            launched.append(popen.pid)
            stdout, stderr = popen.communicate()
        proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
        wall = time.time() - t
        stop.set()
        th.join()
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            raise SystemExit(f"{b}: run failed")
        run_dir = outdir / f"{b}-s0"  # run.py names each run <run-name>-s<seed>
        rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
        train = [r["train-seconds"] for r in rounds[1:]]
        found = re.search(r"users of \d+ of \d+ nodes known \(([\d.]+) s\)", proc.stdout + proc.stderr)
        results[b] = {
            "user_discovery_s": float(found.group(1)) if found else None,
            "median_train_round_s": statistics.median(train),
            "full_eval_flower_s": rounds[-1]["eval-seconds"],
            "full_eval_compute_s": inprocess_eval_seconds(b, args.device),
            "peak_rss_gb": peak["rss"] / 2**30,
            "peak_pss_gb": peak["pss"] / 2**30,
            "peak_largest_process_gb": peak["largest"] / 2**30,
            "bytes_down_per_client": rounds[-1]["bytes-down-per-client"],
            "bytes_up_per_client": rounds[-1]["bytes-up-per-client"],
            "run_wall_s": wall,
            "rounds": args.rounds,
            "engine": args.engine,
            "federation_config": args.federation_config,
        }
        print(b, json.dumps(results[b]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
