"""Keep the figures of finished runs in the repository (run directories under ``outputs/`` are
not committed and are lost with the machine): for every ``OUT/SUBDIR/RUN/final.json``, copy
``final.json`` and ``config.json`` and the evaluated rounds of ``rounds.jsonl`` (the lines that
carry validation metrics, without per-client maps larger than 2 kB; enough for ``bench/tables.py``, ``--max-round`` included) to
``DEST/SUBDIR/RUN/``. Unfinished runs are skipped and listed.

    python bench/keep_runs.py outputs/t20 docs/data/issue14-v2
"""
import json
import shutil
import sys
from pathlib import Path


def keep(out: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy every finished run of ``out`` (``out/SUBDIR/RUN``) to ``dest``; returns the kept
    and the skipped (no ``final.json``) runs as ``SUBDIR/RUN`` strings."""
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
        recs = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        recs = [{k: v for k, v in r.items() if len(json.dumps(v)) <= 2000}  # per-client maps out
                for r in recs if any(k.startswith("valid_") for k in r)]
        (target / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        kept.append(name)
    return kept, skipped


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/keep_runs.py OUT_DIR DEST_DIR")
    kept, skipped = keep(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"kept {len(kept)} runs in {sys.argv[2]}")
    for s in skipped:
        print(f"skipped (not finished): {s}")
