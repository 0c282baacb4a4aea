"""GFMFR group sizes of runs, from ``rounds.jsonl`` (``gfmfr-group-sizes``, one list per round):
mean smallest and largest group, share of rounds with a singleton group and with a group
smaller than 5, and the sizes at a few rounds. Empty groups (a cluster whose members were all
merged into others by ``gfmfr-min-group-size``) are not counted as groups.

    python bench/group_sizes.py NAME=RUN_DIR ... [--at 50 100 200]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def summary(run: Path) -> dict:
    """Statistics of one run's ``gfmfr-group-sizes`` over all its rounds; ValueError when the
    run logged none (not a GFMFR run, or an older one)."""
    sizes = {}
    for line in (run / "rounds.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("gfmfr-group-sizes"):
            sizes[rec["round"]] = [int(x) for x in rec["gfmfr-group-sizes"] if int(x) > 0]
    if not sizes:
        raise ValueError(f"{run}: no 'gfmfr-group-sizes' in rounds.jsonl")
    n = len(sizes)
    return {"rounds": n, "sizes": sizes,
            "min": sum(min(s) for s in sizes.values()) / n,
            "max": sum(max(s) for s in sizes.values()) / n,
            "groups": sum(len(s) for s in sizes.values()) / n,
            "singleton": sum(min(s) == 1 for s in sizes.values()) / n,
            "under5": sum(min(s) < 5 for s in sizes.values()) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    ap.add_argument("--at", type=int, nargs="*", default=[50, 100, 200])
    args = ap.parse_args()
    print("| run | groups (mean) | smallest (mean) | largest (mean) | rounds with a singleton | "
          "rounds with a group < 5 | " + " | ".join(f"round {t}" for t in args.at) + " |")
    print("|---" * (6 + len(args.at)) + "|")
    for arg in args.runs:
        name, path = arg.split("=", 1)
        s = summary(Path(path))
        at = " | ".join(str(s["sizes"].get(t, "-")) for t in args.at)
        print(f"| {name} | {s['groups']:.2f} | {s['min']:.1f} | {s['max']:.1f} | "
              f"{100 * s['singleton']:.0f} % | {100 * s['under5']:.0f} % | {at} |")


if __name__ == "__main__":
    main()
