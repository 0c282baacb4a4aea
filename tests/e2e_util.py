"""Run ``run.py`` (hence ``flwr run`` on Flower's simulation engine) on a tiny dataset."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_app(tmp_path: Path, data_dir: Path, overrides: str, seeds: list[int] | None = None,
            timeout: float = 420) -> tuple[subprocess.CompletedProcess, Path]:
    """Run run.py with ``dataset=grouplens:<data_dir>`` plus ``overrides``; returns the process and
    the output directory."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "run.py"), "--out", str(out), "--run-config",
           f"dataset='grouplens:{data_dir}' cache-dir='{tmp_path / 'cache'}' {overrides}"]
    if seeds:
        cmd += ["--seeds", *map(str, seeds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    return proc, out


def finals(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/final.json"))]
