#!/usr/bin/env python
"""The official PFedRec code under fedmm's evaluation protocol: how much of its HR@10 is protocol.

The official script (Zhangcx19/IJCAI-23-PFedRec) differs from fedmm's protocol in two places:

* ``negatives``: its training negatives are drawn from the items the user never rated in the
  WHOLE data set, so the user's held-out validation and test items are never a training
  negative; fedmm (and a deployment, which cannot know future items) draws them from every item
  but the training positives.
* ``table``: it scores each user with the item table that user fine-tuned locally the last time it
  trained (and users that never trained with the untrained initial model); fedmm scores with the
  current global table and the user's own score function.

This script copies the official files out of a git mirror into a temporary directory, applies
the named patches to the copy (each patch asserts that the text it replaces is there), runs it
through ``bench/official_launcher.py`` and prints the test HR@10 / NDCG@10 at the official
selection rule (last round with the best validation HR@10) and at fedmm's (best validation
NDCG@10 among every 20th round), for the first 100 rounds and for all of them.

    python bench/official_protocol.py --patch negatives table --rounds 200 --out outputs/official-honest
    python bench/official_protocol.py --rounds 100 --out outputs/official-asis     # no patch

The official code seeds nothing, so two runs of one setting differ (about 2 points of HR@10).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from vs_official_hr import official_pick, parse_official  # noqa: E402

# patch name -> (file, old text, new text); CRLF files are matched after normalising to LF.
PATCHES = {
    "negatives": ("data.py",
                  "        train_ratings = pd.merge(self.train_ratings, self.negatives[['userId', 'negative_items']], on='userId')\n",
                  "        _train = self.train_ratings.groupby('userId')['itemId'].apply(set).reset_index().rename(\n"
                  "            columns={'itemId': 'train_items'})\n"
                  "        _train['negative_items'] = _train['train_items'].apply(lambda x: self.item_pool - x)\n"
                  "        train_ratings = pd.merge(self.train_ratings, _train[['userId', 'negative_items']], on='userId')\n"),
    "table": ("engine.py",
              "            user_model.load_state_dict(user_param_dict)\n",
              "            if 'embedding_item.weight' in self.server_model_param:\n"
              "                user_param_dict['embedding_item.weight'] = copy.deepcopy(\n"
              "                    self.server_model_param['embedding_item.weight'].data)\n"
              "            user_model.load_state_dict(user_param_dict)\n"),
}


def prepare(mirror: Path, rev: str, dest: Path, patches: list[str]) -> None:
    """Write the official ``*.py`` files and ML-100K into ``dest``, then apply ``patches``."""
    git = ["git", "--git-dir", str(mirror)]
    names = subprocess.run(git + ["ls-tree", "--name-only", rev], check=True, capture_output=True,
                           text=True).stdout.split("\n")
    for name in (n for n in names if n.endswith(".py")):
        (dest / name).write_bytes(subprocess.run(git + ["show", f"{rev}:{name}"], check=True,
                                                 capture_output=True).stdout)
    (dest / "data" / "ml-100k").mkdir(parents=True)
    (dest / "data" / "ml-100k" / "ratings.dat").write_bytes(subprocess.run(
        git + ["show", f"{rev}:data/ml-100k/ratings.dat"], check=True, capture_output=True).stdout)
    (dest / "log").mkdir()
    (dest / "sh_result").mkdir()
    for name in patches:
        fname, old, new = PATCHES[name]
        path = dest / fname
        text = path.read_text().replace("\r\n", "\n")
        if text.count(old) != 1:
            raise SystemExit(f"patch {name!r}: the text to replace occurs {text.count(old)} times "
                             f"in {fname} at {rev} (expected once); the official code changed")
        path.write_text(text.replace(old, new))


def select(run: dict, upto: int) -> dict:
    """Test HR@10/NDCG@10 at the official rule and at fedmm's rule over rounds < ``upto``."""
    valid = {r: v for r, v in run["valid"].items() if r < upto}
    test = run["test"]
    official = official_pick(valid)
    every20 = [r for r in valid if (r + 1) % 20 == 0]               # fedmm: rounds 20, 40, ...
    ours = max(every20, key=lambda r: (valid[r][1], -r)) if every20 else None
    out = {"rounds": upto, "official_rule": {"round": official + 1, "test_hr@10": test[official][0],
                                              "test_ndcg@10": test[official][1]}}
    if ours is not None:
        out["fedmm_rule"] = {"round": ours + 1, "test_hr@10": test[ours][0],
                             "test_ndcg@10": test[ours][1], "valid_ndcg@10": valid[ours][1]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patch", nargs="*", default=[], choices=sorted(PATCHES))
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mirror", type=Path, default=Path("/work/.mirror/Zhangcx19+IJCAI-23-PFedRec/repo"))
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--deps", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                   / "fedmm-bench" / "official-pydeps",
                   help="pandas 2.x --target dir (bench/vs_official.sh installs it)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads of the official process (1: two runs side by side on 2 cores)")
    args = p.parse_args(argv)
    if not (args.deps / "pandas").is_dir():
        raise SystemExit(f"no pandas 2.x under {args.deps}: run bench/vs_official.sh once, or "
                         f"pip install --target {args.deps} --no-deps pandas==2.3.3 pytz")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        prepare(args.mirror, args.rev, src, args.patch)
        env = dict(os.environ, PYTHONPATH=str(args.deps), PYTHONUNBUFFERED="1",
                   OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, str(ROOT / "bench" / "official_launcher.py"), str(src), "--dataset", "ml-100k",
               "--clients_sample_ratio", "0.1", "--num_round", str(args.rounds)]
        with open(args.out / "official.log", "w") as fh:       # console log (full timestamps)
            subprocess.run(cmd, env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)
    log = (args.out / "official.log").read_text(errors="replace")
    run = parse_official(log, summarise=False)[-1]
    result = {"patches": args.patch, "rev": args.rev,
              "selected": [select(run, r) for r in sorted({min(100, args.rounds), args.rounds})]}
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
