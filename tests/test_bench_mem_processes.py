"""bench/mem_processes.py: the per-process table at the peak of the launched tree."""
from __future__ import annotations

import subprocess
import sys

from script_util import load_script

mem = load_script("bench/mem_processes.py", "mem_processes")

# A stand-in for run.py: a child that holds ~64 MiB for a second, then exits 0.
_CHILD = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
          "'import time; b = bytearray(64 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'])")


def test_reports_the_peak_processes_of_the_launched_tree(monkeypatch, capsys):
    real = subprocess.Popen
    monkeypatch.setattr(mem.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, "-c", _CHILD], **kw))
    assert mem.main(["-c", "num-server-rounds=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("peak sum of RSS") and "processes" in out[0]
    rows = [line for line in out[3:] if line.startswith("| ")]
    assert len(rows) >= 2                                    # the stand-in and its child
    rss = [float(r.split("|")[1]) for r in rows]
    assert rss == sorted(rss, reverse=True) and rss[0] >= 64  # the child's 64 MiB, first


def test_a_failed_run_is_an_error(monkeypatch):
    real = subprocess.Popen
    monkeypatch.setattr(mem.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, "-c", "raise SystemExit(3)"], **kw))
    assert mem.main([]) == 1
