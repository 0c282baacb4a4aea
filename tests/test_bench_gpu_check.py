"""bench/gpu_check.sh: the device script's run step, on this machine's CPU (no wheels)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(args, tmp_path, **env):
    full = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=600)


def test_run_writes_the_speed_figures_and_the_machine(tmp_path):
    cache = os.environ.get("FEDMM_CACHE", str(Path.home() / ".cache" / "fedmm"))
    proc = _run(["run"], tmp_path, SKIP_WHEELS="1", DEVICES="cpu", ROUNDS="2",
                GPU_CHECK_CACHE=cache)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "speed-cpu.json").read_text())["results"]["pfedrec"]
    assert result["engine"] == "inprocess" and result["rounds"] == 2
    assert result["median_train_round_s"] > 0 and result["full_eval_compute_s"] > 0
    assert "torch" in (tmp_path / "gpu.txt").read_text()
    assert "pfedrec" in (tmp_path / "log.txt").read_text()


def test_usage_and_missing_out_are_errors(tmp_path):
    proc = _run([], tmp_path)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = _run(["run"], tmp_path, SKIP_WHEELS="1", ROUNDS="1")
    assert proc.returncode == 2 and "ROUNDS must be >= 2" in proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(["bash", str(SCRIPT), "run"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "OUT" in proc.stderr
