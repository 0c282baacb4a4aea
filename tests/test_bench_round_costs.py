"""bench/round_costs.py: the per-run totals it sums from rounds.jsonl."""
from __future__ import annotations

import json

from script_util import load_script


def test_costs_totals_and_llm_revisions(tmp_path):
    round_costs = load_script("bench/round_costs.py", "round_costs")
    base = {"bytes-down-per-client": 10, "bytes-up-per-client": 12}
    rows = [{**base, "round": 1, "seconds": 2.0, "server-seconds": 0.5},
            {**base, "round": 2, "seconds": 4.0, "server-seconds": 1.5,
             "prototype-seconds": 1.2, "align-seconds": 0.3},
            {**base, "round": 3, "seconds": 6.0, "server-seconds": 2.0, "prototype-seconds": 1.6}]
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = round_costs.costs(tmp_path)
    assert c["run-s"] == 12.0 and c["server-s"] == 4.0 and c["round-s"] == 4.0
    assert c["llm-s"] == [1.2, 1.6] and c["align-s"] == [0.3]
    assert round_costs.median_or_dash(c["llm-s"]) == "1.40" and round_costs.median_or_dash([]) == "-"
