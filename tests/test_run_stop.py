"""run.py --timeout on Flower's simulation engine stops the Flower run itself (``flwr stop``)
and leaves the run directory marked failed (the deployed case, and Ctrl-C, are in
test_deploy.py)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_timeout_stops_the_simulation_run(tmp_path, tiny_grouplens):
    out = tmp_path / "out"
    # Far more rounds than the timeout allows: without `flwr stop` the run would go on.
    cmd = [sys.executable, str(ROOT / "run.py"), "--out", str(out), "--seeds", "0",
           "--timeout", "60", "--run-config",
           f"dataset='grouplens:{tiny_grouplens}' cache-dir='{tmp_path / 'cache'}' "
           "num-server-rounds=100000 eval-every=100000 run-name='long' centralised-epochs=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"Successfully started run (\d+)", proc.stdout)
    assert m, proc.stdout[-3000:]
    run = out / "long-s0"
    failed = json.loads((run / "failed.json").read_text())
    assert "exceeded --timeout 60" in failed["reason"]
    assert f"Flower run {m.group(1)} stopped" in failed["reason"], failed
    # The SuperLink agrees (run.py's FLWR_HOME: $FLWR_HOME or the checkout's .flwr).
    env = dict(os.environ)
    env.setdefault("FLWR_HOME", str(ROOT / ".flwr"))
    ls = subprocess.run([str(Path(sys.executable).parent / "flwr"), "ls", "--run-id", m.group(1),
                         "--format", "json"], capture_output=True, text=True, timeout=120, env=env)
    assert "stopped" in json.loads(ls.stdout)["runs"][0]["status"], ls.stdout + ls.stderr
    # The simulation notices the stop within seconds: rounds.jsonl stops growing, far short of
    # the 100000 rounds, and no final.json appears.
    rounds = run / "rounds.jsonl"
    lines, still, deadline = -1, 0, time.time() + 120
    while still < 10 and time.time() < deadline:
        n = len(rounds.read_text().splitlines()) if rounds.exists() else 0
        still = still + 1 if n == lines else 0
        lines = n
        time.sleep(1)
    assert still >= 10, f"rounds.jsonl still growing 120 s after the stop ({lines} rounds)"
    assert not (run / "final.json").exists()
