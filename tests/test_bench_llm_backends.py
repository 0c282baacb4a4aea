"""bench/llm_backends.py: which logged calls it replays."""
from __future__ import annotations

import json

import pytest

from script_util import load_script

llm_backends = load_script("bench/llm_backends.py", "llm_backends")


def _log(run, rows):
    run.mkdir(parents=True)
    (run / "prototype-prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_load_prompts_keeps_answered_calls_up_to_the_limit(tmp_path):
    ok = {"prompt": "p", "response": "1. A\n2. B", "parsed": ["A", "B"]}
    _log(tmp_path / "a", [ok, {"prompt": "p2", "response": None}, {**ok, "prompt": "p3"},
                          {**ok, "prompt": "p4"}])
    _log(tmp_path / "b", [{**ok, "prompt": "q"}])
    calls = llm_backends.load_prompts([tmp_path / "a", tmp_path / "b"], limit=2)
    assert [c["prompt"] for c in calls] == ["p", "p3", "q"]   # the failed call is skipped
    assert len(llm_backends.load_prompts([tmp_path / "a"], limit=0)) == 3


def test_load_prompts_says_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="prototype-prompts.jsonl not found"):
        llm_backends.load_prompts([tmp_path], limit=0)
    _log(tmp_path / "empty", [{"prompt": "p", "response": None}])
    with pytest.raises(SystemExit, match="no logged LLM prompts"):
        llm_backends.load_prompts([tmp_path / "empty"], limit=0)
