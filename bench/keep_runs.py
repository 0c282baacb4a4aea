"""Keep the figures of finished runs in the repository (run directories under ``outputs/`` are
not committed and are lost with the machine): for every ``OUT/SUBDIR/RUN/final.json``, copy
``final.json`` and ``config.json`` and the evaluated rounds of ``rounds.jsonl`` (the lines that
carry validation metrics, without per-client maps larger than 2 kB; enough for ``bench/tables.py``, ``--max-round`` included) to
``DEST/SUBDIR/RUN/``; with ``--all-rounds`` every round (same filter; enough for
``bench/round_costs.py``). A FedSLLM run's ``prototype-prompts.jsonl`` (its LLM prompts and
answers, input of ``bench/llm_backends.py``) is copied too. Unfinished runs are skipped and
listed.

    python bench/keep_runs.py outputs/t20 docs/data/issue14-v2
    python bench/keep_runs.py --all-rounds outputs/t22 docs/data/issue15-llm
"""
import json
import shutil
import sys
from pathlib import Path


def keep(out: Path, dest: Path, all_rounds: bool = False) -> tuple[list[str], list[str]]:
    """Copy every finished run of ``out`` (``out/SUBDIR/RUN``) to ``dest`` (every round with
    ``all_rounds``, else the evaluated ones); returns the kept and the skipped (no
    ``final.json``) runs as ``SUBDIR/RUN`` strings."""
    kept, skipped = [], []
    for run in sorted(p for p in out.glob("*/*") if p.is_dir()):
        name = f"{run.parent.name}/{run.name}"
        if not (run / "final.json").exists():
            skipped.append(name)
            continue
        target = dest / run.parent.name / run.name
        target.mkdir(parents=True, exist_ok=True)
        for f in ("final.json", "config.json"):
            shutil.copyfile(run / f, target / f)
        if (run / "prototype-prompts.jsonl").exists():   # FedSLLM runs with an LLM only
            shutil.copyfile(run / "prototype-prompts.jsonl", target / "prototype-prompts.jsonl")
        recs = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        recs = [{k: v for k, v in r.items() if len(json.dumps(v)) <= 2000}  # per-client maps out
                for r in recs if all_rounds or any(k.startswith("valid_") for k in r)]
        (target / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        kept.append(name)
    return kept, skipped


if __name__ == "__main__":
    args = sys.argv[1:]
    every = "--all-rounds" in args
    args = [a for a in args if a != "--all-rounds"]
    if len(args) != 2:
        sys.exit("usage: python bench/keep_runs.py [--all-rounds] OUT_DIR DEST_DIR")
    kept, skipped = keep(Path(args[0]), Path(args[1]), all_rounds=every)
    print(f"kept {len(kept)} runs in {args[1]}")
    for s in skipped:
        print(f"skipped (not finished): {s}")
