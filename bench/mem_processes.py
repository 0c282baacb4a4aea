#!/usr/bin/env python
"""Which processes of a run hold the memory: the per-process RSS and PSS at the moment the run's
sum of RSS peaked (sampled every 0.5 s over the processes ``bench/speed.py`` counts).

    python bench/mem_processes.py -c "num-server-rounds=8 eval-every=8 centralised-epochs=0"

Launches ``run.py`` with the run config ``-c`` (outputs to a temporary directory, removed after)
and prints the peak's total and one line per process, largest first.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--run-config", default="num-server-rounds=8 eval-every=8 centralised-epochs=0")
    args = p.parse_args(argv)
    from bench.speed import process_memory

    peak: tuple[int, dict] = (0, {})
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-c",
                                 f"{args.run_config} run-name='mem'", "--out", out],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            snap = process_memory(proc.pid)
            total = sum(v[1] for v in snap.values())
            if total > peak[0]:
                peak = (total, snap)
            time.sleep(0.5)
    if proc.returncode != 0:
        print(f"run.py exited {proc.returncode}", file=sys.stderr)
        return 1
    total, snap = peak
    print(f"peak sum of RSS {total / 2**30:.2f} GiB, sum of PSS "
          f"{sum(v[2] for v in snap.values()) / 2**30:.2f} GiB, {len(snap)} processes")
    print("| RSS MiB | PSS MiB | process |\n|---|---|---|")
    for cmd, rss, pss in sorted(snap.values(), key=lambda v: -v[1]):
        print(f"| {rss / 2**20:.0f} | {pss / 2**20:.0f} | `{cmd[:90]}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
