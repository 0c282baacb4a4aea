"""bench/pyspy_top.py: own and inclusive samples from py-spy's collapsed stacks."""
from __future__ import annotations

from script_util import load_script

pyspy_top = load_script("bench/pyspy_top.py", "pyspy_top")


def test_own_and_inclusive_counts_one_key_per_function():
    lines = [
        "run (threading.py:1);worker (vce_api.py:10);submit (ray_actor.py:5) 6",
        "run (threading.py:1);worker (vce_api.py:12);get (worker.py:9) 3",
        "run (threading.py:1);worker (vce_api.py:10);worker (vce_api.py:20) 1",  # recursion
        "garbage",
    ]
    total, own, incl = pyspy_top.summarise(lines)
    assert total == 10
    assert own == {"submit (ray_actor.py)": 6, "get (worker.py)": 3, "worker (vce_api.py)": 1}
    # a function counts once per sample even when it appears twice in the stack
    assert incl["worker (vce_api.py)"] == 10 and incl["run (threading.py)"] == 10
    assert incl["submit (ray_actor.py)"] == 6
