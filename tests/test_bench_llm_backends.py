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


class _Gen:
    """A backend double: answers every prompt with a fixed numbered list, stopping early at
    ``is_full`` as a real local backend does (through ChatLLM.answer)."""

    def __init__(self, text):
        from server_tasks.prototypes.backends import ChatLLM

        class Scripted(ChatLLM):
            name = "scripted"
            stops_early = True

            def complete(self, prompt, system=None):
                return text

            def generate(self, prompt, system=None, done=None):
                out = ""
                for line in text.splitlines(keepends=True):
                    out += line
                    if done is not None and done(out):
                        break
                return out, False

        self.llm = Scripted()


def test_replay_compares_answers_and_accepted_names_both_ways():
    text = "1. Aa bb\n2. Cc dd\n3. Aa bb\n4. Ee ff\n"
    llm = _Gen(text).llm
    call = {"prompt": "p", "system": None, "response": text,
            "parsed": ["Aa bb", "Cc dd", "Aa bb", "Ee ff"], "accepted": ["Aa bb", "Cc dd"]}
    accept = lambda names: list(dict.fromkeys(names))[:2]     # noqa: E731
    whole = llm_backends.replay(llm, call, None, accept)
    assert whole["same_answer"] and whole["same_parsed"] and whole["same_accepted"]
    assert not whole["stopped"]
    stopped = llm_backends.replay(llm, call, lambda names: len(set(names)) >= 2, accept)
    assert stopped["stopped"] and stopped["same_accepted"]
    assert not stopped["same_answer"] and not stopped["same_parsed"]
    row = llm_backends.summary("scripted", 1, "stop-full", 0.0, [whole, stopped])
    assert row["stopped_at_full_list"] == 1 and row["same_accepted_names_as_logged"] == 2
    assert row["same_answer_as_logged"] == 1 and row["calls"] == 2


def test_stop_in_logged_finds_the_first_full_list_in_a_logged_answer():
    answer = "1. Aa bb\n2. Aa bb\n3. Cc dd\n4. Ee ff\n5. Gg"
    call = {"response": answer, "truncated": True, "accepted": ["Aa bb", "Cc dd"]}
    accept = lambda names: list(dict.fromkeys(names))[:2]     # noqa: E731
    two = lambda names: len(set(names)) >= 2                  # noqa: E731
    res = llm_backends.stop_in_logged(call, two, accept)
    assert res["stopped"] and res["same_accepted"]
    assert res["chars_kept"] == len("1. Aa bb\n2. Aa bb\n3. Cc dd") and res["chars"] == len(answer)
    never = llm_backends.stop_in_logged(call, lambda names: False, accept)
    assert not never["stopped"] and never["same_accepted"] and never["chars_kept"] == len(answer)
    wrong = llm_backends.stop_in_logged({**call, "accepted": ["Aa bb"]}, two, accept)
    assert not wrong["same_accepted"]
