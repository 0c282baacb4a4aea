"""run.py refuses to reuse a local SuperLink started in another fedmm checkout."""
from __future__ import annotations

from pathlib import Path

from script_util import load_script

run_py = load_script("run.py", "run_py")


def _process(proc: Path, pid: int, argv: list[str], cwd: Path) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "cwd").symlink_to(cwd)


def test_only_a_simulation_superlink_in_another_checkout_is_named(tmp_path):
    here, other, plain = tmp_path / "here", tmp_path / "other", tmp_path / "plain"
    for d in (here, other, plain):
        d.mkdir()
    (here / "clients").mkdir()
    (other / "strategies").mkdir()
    proc = tmp_path / "proc"
    link = ["/venv/bin/python", "/venv/bin/flower-superlink", "--insecure", "--simulation"]
    _process(proc, 11, link, here)                                   # this checkout: fine
    _process(proc, 12, link, plain)                                  # no fedmm packages: fine
    _process(proc, 13, link[:3], other)                              # deployment SuperLink
    _process(proc, 14, ["/venv/bin/python", "/venv/bin/flwr-simulation"], other)
    (proc / "self").mkdir()
    assert run_py.foreign_superlink(here, proc) is None
    _process(proc, 15, link, other)
    assert run_py.foreign_superlink(here, proc) == (15, other)
    assert run_py.foreign_superlink(tmp_path / "missing", tmp_path / "noproc") is None


def test_main_stops_before_any_run_and_names_the_pid(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(run_py, "foreign_superlink", lambda: (4242, tmp_path / "old"))
    monkeypatch.setattr(run_py, "run_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert run_py.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pid 4242" in err and str(tmp_path / "old") in err and "kill 4242" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_method_section_fails_before_anything_starts(capsys):
    """gfmfr-* / fedsllm-* values are validated in run.py, before Flower starts (exit 2)."""
    import pytest

    from fedmm.config import ConfigError

    ns = run_py.parse_args(["--run-config", "method='gfmfr' gfmfr-groups=0"])
    with pytest.raises(ConfigError, match="'gfmfr-groups' = 0: must be >= 1"):
        run_py.resolve_config(ns)
    ns = run_py.parse_args(["--run-config", "method='fedsllm' fedsllm-fraction=2.0"])
    with pytest.raises(ConfigError, match="fedsllm-fraction"):
        run_py.resolve_config(ns)
    # a method's section is only checked when that method runs
    ns = run_py.parse_args(["--run-config", "method='base' gfmfr-groups=0"])
    assert run_py.resolve_config(ns)[1].method == "base"


def test_flwr_env_starts_ray_without_task_events_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("RAY_task_events_report_interval_ms", raising=False)
    monkeypatch.delenv("RAY_max_direct_call_object_size", raising=False)
    env = run_py.flwr_env()
    assert env["RAY_task_events_report_interval_ms"] == "0"
    assert env["RAY_max_direct_call_object_size"] == str(4 * 1024 * 1024)
    monkeypatch.setenv("RAY_task_events_report_interval_ms", "1000")   # the user's own wins
    assert run_py.flwr_env()["RAY_task_events_report_interval_ms"] == "1000"
