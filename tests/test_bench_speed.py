"""bench/speed.py: which processes its memory figures count."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from script_util import load_script

speed = load_script("bench/speed.py", "speed")

_SLEEP = "import time; time.sleep(30)"


def test_run_processes_follow_the_launched_tree_not_other_run_py():
    """The launched run.py and its children count; another process named run.py (an unrelated
    in-process run on the same machine) does not."""
    root = subprocess.Popen([sys.executable, "-c",
                             f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_SLEEP!r}])",
                             "run.py"])
    other = subprocess.Popen([sys.executable, "-c", _SLEEP, "run.py"])
    try:
        for _ in range(200):   # wait for root's child to exist
            pids = {p.pid for p in speed.run_processes(root.pid)}
            if len(pids - {root.pid}) >= 1:
                break
            time.sleep(0.05)
        assert root.pid in pids and len(pids) >= 2
        assert other.pid not in pids
        assert other.pid not in {p.pid for p in speed.run_processes(None)}
        mem = speed.tree_memory(root.pid)
        assert mem["rss"] >= mem["largest"] > 0 and mem["pss"] > 0
    finally:
        for p in psutil.Process(root.pid).children(recursive=True):
            p.kill()
        for p in (root, other):
            p.kill()
            p.wait()
