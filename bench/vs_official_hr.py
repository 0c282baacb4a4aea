"""HR@10 / NDCG@10 and per-round seconds of bench/vs_official.sh's runs, one row per run.

  python bench/vs_official_hr.py --official-log OUT/official.log --fedmm-runs OUT/fedmm-runs [--json F]

Official PFedRec (train.py): every round it logs ``[Testing Epoch r] HR = .., NDCG = ..`` and
``[Evluating Epoch r] ...`` (validation; sic), both on 99 sampled negatives per user, and keeps
the test figures of the last round with the highest validation HR@10 (``>=``). A log without
validation lines is reported as test-only: best-round test and last-round test, labelled.
Per-round seconds come from the logging timestamps (``Round r starts !`` to the next round's
start, the last one to the final summary); train = round start to ``Testing phase!``.

fedmm: final.json ``test`` (the test metrics at the round its select-metric chose on validation,
valid_sampled_ndcg@10 by default), sampled protocol (99 negatives) for the comparison; the full
protocol (all unrated items) and the test at the official rule (last max valid sampled HR@10)
are printed too. Per-round seconds: rounds.jsonl ``seconds`` (train + evaluation rounds).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})-\w+-(.*)$")
_METRIC = re.compile(r"\[(Testing|Evluating) Epoch (\d+)\] HR = ([\d.]+), NDCG = ([\d.]+)")


def _ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse_official(text: str, summarise: bool = True) -> list[dict]:
    """One dict per run found in the (appended) console output of train.py.

    ``summarise=False``: the raw per-run dicts (``test`` / ``valid``: round -> (HR@10, NDCG@10),
    rounds counted from 0 as train.py logs them) instead of :func:`summarise_official`'s rows."""
    runs: list[dict] = []
    cur = None
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        t, msg = _ts(m.group(1)), m.group(2)
        if msg.startswith("Range of userId"):
            cur = {"start": t, "round_start": {}, "train_end": {}, "test": {}, "valid": {}, "end": None,
                   "reported": None}
            runs.append(cur)
            continue
        if cur is None:
            continue
        cur["last"] = t
        if (r := re.match(r"Round (\d+) starts", msg)):
            cur["round_start"][int(r.group(1))] = t
            cur["_round"] = int(r.group(1))
        elif msg.startswith("Testing phase!") and "_round" in cur:
            cur["train_end"][cur["_round"]] = t
        elif (r := _METRIC.search(msg)):
            key = "test" if r.group(1) == "Testing" else "valid"
            cur[key][int(r.group(2))] = (float(r.group(3)), float(r.group(4)))
        elif msg.startswith("PFedRec") and cur["end"] is None:
            cur["end"] = t
        elif (r := re.match(r"Best test hr: ([\d.]+), ndcg: ([\d.]+) at round (\d+)", msg)):
            cur["reported"] = (float(r.group(1)), float(r.group(2)), int(r.group(3)))
    return [summarise_official(r) for r in runs] if summarise else runs


def official_pick(valid: dict) -> int:
    """train.py's selection: the last round with the highest validation HR@10 (``>=``);
    ``valid``: round -> (HR@10, NDCG@10)."""
    return max(valid, key=lambda k: (valid[k][0], k))


def summarise_official(r: dict) -> dict:
    rounds = sorted(r["round_start"])
    end = r["end"] if r["end"] is not None else r.get("last")
    bounds = [r["round_start"][k] for k in rounds] + [end]
    secs = [b - a for a, b in zip(bounds, bounds[1:])]
    train = [r["train_end"][k] - r["round_start"][k] for k in rounds if k in r["train_end"]]
    out = {"rounds": len(r["test"]), "finished": r["end"] is not None,
           "setup_seconds": (bounds[0] - r["start"]) if rounds else None,
           "median_round_seconds": statistics.median(secs) if secs else None,
           "mean_round_seconds": statistics.fmean(secs) if secs else None,
           "median_train_seconds": statistics.median(train) if train else None,
           "median_eval_seconds": statistics.median([s - t for s, t in zip(secs, train)]) if train else None,
           "logged_seconds": (end - r["start"]) if end else None}
    test = r["test"]
    if not test:
        return out
    last = max(test)
    out["last_round"], out["last_test"] = last, dict(zip(("hr@10", "ndcg@10"), test[last]))
    if r["valid"]:
        best = official_pick(r["valid"])
        out["selection"] = "test at the last round with the highest validation HR@10 (official rule)"
        out["best_round"], out["valid"] = best, dict(zip(("hr@10", "ndcg@10"), r["valid"][best]))
    else:
        best = max(sorted(test), key=lambda k: test[k][0])
        out["selection"] = "NO VALIDATION IN LOG: best-round TEST HR@10 (optimistic), see last_test too"
        out["best_round"] = best
    out["test"] = dict(zip(("hr@10", "ndcg@10"), test[best]))
    if r["reported"]:
        out["reported_by_train_py"] = {"hr@10": r["reported"][0], "ndcg@10": r["reported"][1],
                                       "round": r["reported"][2]}
    return out


def parse_fedmm(run_dir: Path) -> dict:
    out: dict = {"run_dir": str(run_dir)}
    fin = run_dir / "final.json"
    if not fin.exists():
        out["status"] = "no final.json"
        return out
    f = json.loads(fin.read_text())
    pick = lambda d, p: {"hr@10": d.get(f"{p}_hr@10"), "ndcg@10": d.get(f"{p}_ndcg@10")}  # noqa: E731
    out.update(status=f.get("status"), rounds=f.get("rounds"), best_round=f.get("best_round"),
               select_metric=f.get("select_metric"), wall_seconds=f.get("wall_seconds"),
               median_train_seconds=f.get("median_train_round_seconds"),
               median_eval_seconds=f.get("median_eval_seconds"),
               test=pick(f.get("test") or {}, "sampled"), valid=pick(f.get("valid") or {}, "sampled"),
               test_full=pick(f.get("test") or {}, "full"), last_round=f.get("last_round"),
               last_test=pick(f.get("last_test") or {}, "sampled"))
    rj = run_dir / "rounds.jsonl"
    if rj.exists():
        rows = [json.loads(x) for x in rj.read_text().splitlines() if x.strip()]
        secs = [r["seconds"] for r in rows if "seconds" in r]
        if secs:
            out["median_round_seconds"] = statistics.median(secs)
            out["mean_round_seconds"] = statistics.fmean(secs)
            out["sum_round_seconds"] = sum(secs)
        best_hr, best = -1.0, None
        for r in rows:
            if r.get("valid_sampled_hr@10") is not None and r["valid_sampled_hr@10"] >= best_hr:
                best_hr, best = r["valid_sampled_hr@10"], r
        if best is not None:
            out["official_rule"] = {"round": best["round"], "hr@10": best.get("test_sampled_hr@10"),
                                    "ndcg@10": best.get("test_sampled_ndcg@10")}
    return out


def _f(x, nd=4) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _hr_ndcg(m: dict) -> str:
    """``HR@10 x NDCG@10 y`` of a metrics dict (``-`` for a missing value)."""
    return f"HR@10 {_f(m.get('hr@10'))} NDCG@10 {_f(m.get('ndcg@10'))}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official-log", type=Path)
    ap.add_argument("--fedmm-runs", type=Path, help="folder of fedmm run dirs, or one run dir")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    res: dict = {"official": [], "fedmm": []}
    if a.official_log:
        res["official"] = parse_official(a.official_log.read_text(errors="replace")) if a.official_log.exists() else []
    if a.fedmm_runs:
        d = a.fedmm_runs
        dirs = [d] if (d / "final.json").exists() or (d / "rounds.jsonl").exists() else \
            sorted(p for p in d.glob("*") if p.is_dir()) if d.exists() else []
        res["fedmm"] = [parse_fedmm(p) for p in dirs]

    print("HR@10 / NDCG@10 on 99 sampled negatives (leave-one-out), validation-selected test")
    print("\nofficial PFedRec (per round: train 10 % of clients, then test + validation on all users)")
    if not res["official"]:
        print("  no run found in", a.official_log)
    for i, o in enumerate(res["official"], 1):
        if "test" not in o:
            print(f"  run {i}: no metrics (rounds logged: {o['rounds']})")
            continue
        print(f"  run {i}: {o['rounds']} rounds{'' if o['finished'] else ' (UNFINISHED)'}; {o['selection']}")
        v = o.get("valid") or {}
        print(f"    selected round {o['best_round']}: test {_hr_ndcg(o['test'])} (valid {_hr_ndcg(v)})")
        print(f"    last round {o['last_round']}: test {_hr_ndcg(o['last_test'])}")
        if "reported_by_train_py" in o:
            rp = o["reported_by_train_py"]
            print(f"    train.py's own 'Best test': {_hr_ndcg(rp)} round {rp['round']}")
        print(f"    seconds per round: median {_f(o['median_round_seconds'], 2)} (train "
              f"{_f(o['median_train_seconds'], 2)} + eval {_f(o['median_eval_seconds'], 2)}), mean "
              f"{_f(o['mean_round_seconds'], 2)}; logged {_f(o['logged_seconds'], 1)} s after "
              f"{_f(o['setup_seconds'], 1)} s of data preparation")
    print("\nfedmm PFedRec (Flower simulation; evaluation on all users every eval-every rounds)")
    if not res["fedmm"]:
        print("  no run dir found in", a.fedmm_runs)
    for i, o in enumerate(res["fedmm"], 1):
        if "test" not in o:
            print(f"  run {i}: {o['status']} ({o['run_dir']})")
            continue
        print(f"  run {i}: {o['rounds']} rounds, status {o['status']}; test at the round chosen by "
              f"{o['select_metric']} ({Path(o['run_dir']).name})")
        print(f"    selected round {o['best_round']}: test {_hr_ndcg(o['test'])} (valid "
              f"{_hr_ndcg(o['valid'])}; full-ranking test {_hr_ndcg(o['test_full'])})")
        if "official_rule" in o:
            r = o["official_rule"]
            print(f"    official rule (last max valid HR@10), round {r['round']}: test {_hr_ndcg(r)}")
        print(f"    last round {o['last_round']}: test {_hr_ndcg(o['last_test'])}")
        print(f"    seconds per round: median {_f(o.get('median_round_seconds'), 2)} (train "
              f"{_f(o['median_train_seconds'], 2)}; an evaluation adds {_f(o['median_eval_seconds'], 2)}), "
              f"mean {_f(o.get('mean_round_seconds'), 2)}; run wall {_f(o['wall_seconds'], 1)} s")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
