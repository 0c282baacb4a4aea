"""Markdown table of FedSLLM selection probes: validation sampled HR@10 at rounds 100 and 200,
best validation round (by the run's select metric) and the test sampled HR@10 there, selection
coverage at rounds 100 / 200, mean repeat, and mean predicted probability of the selected vs
all positives (``selection-p-selected`` / ``selection-p-all``, runs from commit 5465990 on).

    python bench/selection_probe_table.py NAME=RUN_DIR ...
"""
import json
import sys
from pathlib import Path


def row(name: str, run: Path) -> str:
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    by = {r["round"]: r for r in rounds}
    final = json.loads((run / "final.json").read_text())
    val = lambda t: f"{100 * by[t]['valid_sampled_hr@10']:.2f}" if t in by and "valid_sampled_hr@10" in by[t] else "-"
    cov = lambda t: f"{by[t]['selection-coverage']:.2f}" if t in by and "selection-coverage" in by[t] else "-"
    rep = [r["selection-repeat"] for r in rounds if "selection-repeat" in r]
    ps = [(r["selection-p-selected"], r["selection-p-all"]) for r in rounds if "selection-p-selected" in r]
    p = (f"{sum(a for a, _ in ps) / len(ps):.2f} / {sum(b for _, b in ps) / len(ps):.2f}" if ps else "-")
    return (f"| {name} | {val(100)} | {val(200)} | {final['best_round']} | "
            f"{100 * final['test']['sampled_hr@10']:.2f} | {cov(100)} / {cov(200)} | "
            f"{(100 * sum(rep) / len(rep)) if rep else float('nan'):.1f} % | {p} |")


print("| run | valid HR@10 r100 | valid HR@10 r200 | best round | test HR@10 at best | "
      "coverage r100 / r200 | repeat | p selected / all |")
print("|---|---|---|---|---|---|---|---|")
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    print(row(name, Path(path)))
