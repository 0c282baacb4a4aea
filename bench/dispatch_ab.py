#!/usr/bin/env python
"""A/B of the simulation engine's message dispatch: ``sim-indexed-dispatch`` on vs off.

Runs the README's job (PFedRec, ML-100K, 943 nodes, 10 % clients) through ``run.py`` on
Flower's simulation engine for ``--rounds`` rounds, evaluating all users EVERY round, once with
each setting, alternating (on, off, on, off, ...) so a drifting machine hits both alike, and
prints per setting the median over runs of: the user-discovery round (cold: it includes the
client actors' first load), the training round (rounds 2+), the all-user evaluation, and
whether the validation metric of every round was identical between the two settings.

    .venv/bin/python bench/dispatch_ab.py --pairs 2 --rounds 3 --out bench/results/dispatch-ab.json
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(indexed: bool, rounds: int, out: Path, extra: str) -> dict:
    cmd = [sys.executable, str(ROOT / "run.py"), "--out", str(out), "--run-config",
           f"num-server-rounds={rounds} eval-every=1 centralised-epochs=0 "
           f"sim-indexed-dispatch={'true' if indexed else 'false'} {extra}".strip()]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(cmd)}):\n{log[-3000:]}")
    (run_dir,) = [p for p in out.iterdir() if (p / "rounds.jsonl").exists()]
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    found = re.search(r"users of \d+ of \d+ nodes known \(([\d.]+) s\)", log)
    return {"indexed": indexed,
            "discovery_s": float(found.group(1)) if found else None,
            "train_s": [r["train-seconds"] for r in rows],
            "eval_s": [r["eval-seconds"] for r in rows],
            "valid": [r["valid_sampled_ndcg@10"] for r in rows],
            "index_logged": "per-node message index on" in log}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run-config", default="", help="extra run-config overrides")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dispatch-ab.json"))
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for indexed in (True, False):
                r = one_run(indexed, args.rounds, Path(tmp) / f"{i}-{indexed}", args.run_config)
                print(json.dumps(r), flush=True)
                runs.append(r)
    summary = {}
    for indexed in (True, False):
        rs = [r for r in runs if r["indexed"] == indexed]
        summary["on" if indexed else "off"] = {
            "discovery_s": statistics.median(r["discovery_s"] for r in rs),
            "train_round_s": statistics.median(t for r in rs for t in r["train_s"][1:]),
            "eval_s": statistics.median(t for r in rs for t in r["eval_s"]),
            "eval_s_min_max": [min(t for r in rs for t in r["eval_s"]),
                               max(t for r in rs for t in r["eval_s"])]}
    summary["same-metrics"] = len({tuple(r["valid"]) for r in runs}) == 1
    print(json.dumps(summary, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "summary": summary,
                                          "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
