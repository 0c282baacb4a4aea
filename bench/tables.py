#!/usr/bin/env python
"""Markdown table (mean ± std over seeds) from the ``*-summary.json`` files run.py writes.

    python bench/tables.py outputs/results-base --metrics sampled_hr@10 sampled_ndcg@10 full_hr@50 full_ndcg@50
    python bench/tables.py --row base=outputs/a/pfedrec-summary.json,outputs/b/base-summary.json

Each positional argument is a directory (one row per ``*-summary.json`` in it) or one summary
file. ``--row NAME=PATH,PATH`` pools the seeds of several summaries, run directories (their
``final.json``) or final-shaped files into one row. One seed is shown without a spread.
Each row whose finals carry ``reference`` rows (written by run.py) is followed by its
``mostpop`` (floor) and ``centralised`` (ceiling) rows, same seeds. ``--paired A:B`` (rows
named by ``--row``) adds a table of A minus B per seed, matched on the seed, and its mean.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def row(name: str, finals: list[dict], metrics: list[str], scale: float) -> str:
    cells = []
    for m in metrics:
        missing = [f.get("seed") for f in finals if m not in f["test"]]
        if missing:
            raise ValueError(f"row {name!r}: no test metric {m!r} for seed(s) {missing}; "
                             f"it has {sorted(finals[0]['test'])}")
        vals = [f["test"][m] * scale for f in finals]
        if len(vals) > 1:
            cells.append(f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}")
        else:  # one seed: no spread to show
            cells.append(f"{vals[0]:.2f}")
    rounds = sorted({f["best_round"] for f in finals}, key=str)
    return (f"| {name} | " + " | ".join(cells)
            + f" | {len(finals)} | {','.join(map(str, rounds))} |")


def reference_finals(finals: list[dict], which: str) -> list[dict] | None:
    """The ``which`` reference row (``mostpop`` / ``centralised``) of every final, shaped as
    finals (best round: the centralised best epoch, else '-'); None unless all have it."""
    refs = [f.get("reference", {}).get(which) for f in finals]
    if not all(refs):
        return None
    return [{"seed": f.get("seed"), "best_round": r.get("best_epoch", "-"), "test": r["test"]}
            for f, r in zip(finals, refs)]


def rows(name: str, finals: list[dict], metrics: list[str], scale: float,
         references: bool = True) -> list[str]:
    """The row of ``finals`` followed by its floor and ceiling rows where present (unless
    ``references`` is false)."""
    out = [row(name, finals, metrics, scale)]
    for which in ("mostpop", "centralised") if references else ():
        ref = reference_finals(finals, which)
        if ref is not None:
            out.append(row(f"{name}: {which}", ref, metrics, scale))
    return out


def paired(name_a: str, finals_a: list[dict], name_b: str, finals_b: list[dict],
           metrics: list[str], scale: float) -> str:
    """One row of per-seed differences ``a - b`` (seeds in ascending order, matched on
    ``seed``: runs with one seed train the same users, so these are paired) and their mean.
    Raises ValueError when the two rows do not have the same seeds."""
    by_a = {f["seed"]: f for f in finals_a}
    by_b = {f["seed"]: f for f in finals_b}
    if sorted(by_a) != sorted(by_b):
        raise ValueError(f"--paired {name_a}:{name_b}: seeds {sorted(by_a)} against {sorted(by_b)}")
    seeds = sorted(by_a)
    cells = []
    for m in metrics:
        diffs = [(by_a[s]["test"][m] - by_b[s]["test"][m]) * scale for s in seeds]
        cells.append(" / ".join(f"{d:+.2f}" for d in diffs) + f" (mean {statistics.mean(diffs):+.2f})")
    return (f"| {name_a} − {name_b} | " + " | ".join(cells)
            + f" | {' / '.join(map(str, seeds))} |")


def truncated(run_dir: Path, final: dict, max_round: int) -> dict:
    """``final`` as if the run had stopped at ``max_round``: the best round by the run's
    ``select-metric`` (config.json) among the evaluated rounds ``<= max_round`` of
    ``rounds.jsonl`` (training up to there is the same), its test metrics; reference rows kept.

    Raises ValueError when the run has no evaluated round ``<= max_round``."""
    select = json.loads((run_dir / "config.json").read_text())["select-metric"]
    best = None
    for line in (run_dir / "rounds.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["round"] <= max_round and select in rec and (best is None or rec[select] > best[select]):
            best = rec
    if best is None:
        raise ValueError(f"{run_dir}: no evaluated round <= {max_round}")
    test = {k.removeprefix("test_"): v for k, v in best.items() if k.startswith("test_")}
    return {**final, "best_round": best["round"], "test": test}


def load(path: Path, max_round: int | None = None) -> list[dict]:
    """Finals of a ``*-summary.json``, the one ``final.json`` of a run directory, or one
    final-shaped file (``{"seed", "best_round", "test"}``, e.g. figures kept in ``docs/data/``
    for a run whose directory is gone). ``max_round`` (run directories only): the figures the
    run had at that round (:func:`truncated`). Raises ValueError naming the path for a missing
    path, an unfinished run, a file that is not JSON, or JSON of another shape."""
    if path.is_dir():
        if not (path / "final.json").exists():
            raise ValueError(f"{path}: no final.json (the run did not finish?)")
        if max_round is not None:
            return [truncated(path, json.loads((path / "final.json").read_text()), max_round)]
        path = path / "final.json"
    elif not path.exists():
        raise ValueError(f"{path}: no such run directory or file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if "finals" in data:
        return data["finals"]
    if "test" in data and "best_round" in data:
        return [data]
    raise ValueError(f"{path}: neither a *-summary.json (key 'finals') nor a final.json "
                     "(keys 'test', 'best_round')")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="*", help="directories with *-summary.json files, or such files")
    ap.add_argument("--row", action="append", default=[], metavar="NAME=FILE,FILE",
                    help="one row pooling the seeds of these summary files")
    ap.add_argument("--metrics", nargs="+", default=["sampled_hr@10", "sampled_ndcg@10", "full_hr@50", "full_ndcg@50"])
    ap.add_argument("--scale", type=float, default=100.0, help="multiply metrics (default: percent)")
    ap.add_argument("--reference", choices=("each", "first"), default="each",
                    help="MostPop/centralised rows after each row (default) or only after the "
                         "first (rows of one backbone and split share them)")
    ap.add_argument("--max-round", type=int, default=None,
                    help="--row run directories: best validation round among rounds <= this "
                         "(the figures of a shorter run with the same seed)")
    ap.add_argument("--paired", action="append", default=[], metavar="A:B",
                    help="after the table, row A minus row B per seed (both named by --row)")
    args = ap.parse_args()
    try:
        lines = _lines(args)
    except ValueError as e:  # a bad path or file: say which, print no half table
        raise SystemExit(f"tables.py: {e}") from None
    print("\n".join(lines))


def _lines(args: argparse.Namespace) -> list[str]:
    out = ["| run | " + " | ".join(args.metrics) + " | seeds | best rounds |",
           "|---" * (len(args.metrics) + 3) + "|"]
    named = {}
    for spec in args.row:
        name, _, files = spec.rpartition("=")   # the name may contain "=", the paths not
        if not name or not files:
            raise ValueError(f"--row {spec!r}: expected NAME=PATH[,PATH...]")
        finals = named[name] = [f for p in files.split(",") for f in load(Path(p), args.max_round)]
        first = len(out) == 2
        out += rows(name, finals, args.metrics, args.scale,
                    references=args.reference == "each" or first)
    for d in map(Path, args.dirs):
        for path in (sorted(d.glob("*-summary.json")) if d.is_dir() else [d]):
            out += rows(path.name.removesuffix("-summary.json"), load(path), args.metrics, args.scale)
    if args.paired:
        out += ["", "| paired, per seed | " + " | ".join(args.metrics) + " | seeds |",
                "|---" * (len(args.metrics) + 2) + "|"]
    for spec in args.paired:
        a, sep, b = spec.partition(":")
        if not sep or a not in named or b not in named:
            raise ValueError(f"--paired {spec!r}: expected A:B, both names of --row rows "
                             f"({sorted(named)})")
        out.append(paired(a, named[a], b, named[b], args.metrics, args.scale))
    return out


if __name__ == "__main__":
    main()
