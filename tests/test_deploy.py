"""The deploy/ scripts on loopback with real processes: a SuperLink with TLS and SuperNode
authentication, one SuperNode per user of a tiny dataset, a 2-round run judged by its
final.json; an unregistered SuperNode key is refused; ``--timeout`` and Ctrl-C stop the Flower
run itself and mark its directory failed.

Every process the scripts start is stopped by the fixture's finalizer (deploy/stop.sh, then a
check that each recorded PID is gone), also when a test fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_tiny_grouplens

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
USERS = 4  # SuperNodes started (one per user of the tiny dataset)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("FLWR_HOME", None)  # the scripts keep theirs under the deployment directory
    env["FEDMM_CONNECTION"] = "fedmm-test"
    return env


def _script(name: str, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEPLOY / name), *map(str, args)], env=_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Deployment:
    def __init__(self, root: Path) -> None:
        self.dir = root / "deployment"
        self.data = write_tiny_grouplens(root / "gl", n_users=USERS)
        self.big_data = write_tiny_grouplens(root / "gl6", n_users=USERS + 2)  # more users than nodes
        self.cache = root / "cache"
        self.out = root / "out"
        self.address = f"127.0.0.1:{_free_port()}"
        self.pids: set[int] = set()

    def record_pids(self) -> None:
        for f in (self.dir / "pids").glob("*.pid"):
            self.pids.add(int(f.read_text()))

    def run(self, *args, timeout: float = 600) -> subprocess.CompletedProcess:
        return _script("run.sh", self.dir, self.address, "--out", self.out, *args, timeout=timeout)

    def flwr(self, *args) -> subprocess.CompletedProcess:
        env = dict(_env(), FLWR_HOME=str(self.dir / "flwr-home"))
        return subprocess.run([str(Path(sys.executable).parent / "flwr"), *args], env=env,
                              capture_output=True, text=True, timeout=120)

    def run_status(self, run_id: int) -> str:
        p = self.flwr("ls", "fedmm-test", "--run-id", str(run_id), "--format", "json")
        return json.loads(p.stdout)["runs"][0]["status"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    d = Deployment(tmp_path_factory.mktemp("deploy"))
    try:
        p = _script("make_certs.sh", d.dir, USERS + 1)  # the last key stays unregistered
        assert p.returncode == 0, p.stderr
        p = _script("start_superlink.sh", d.dir, "127.0.0.1", d.address.rsplit(":", 1)[1])
        d.record_pids()
        assert p.returncode == 0, p.stdout + p.stderr
        p = _script("register_nodes.sh", d.dir, d.address, 0, USERS - 1)
        assert p.returncode == 0, p.stdout + p.stderr
        p = _script("start_supernodes.sh", d.dir, d.address, USERS, 0, USERS - 1, "auto")
        d.record_pids()
        assert p.returncode == 0, p.stdout + p.stderr
        yield d
    finally:
        d.record_pids()
        p = _script("stop.sh", d.dir, timeout=300)
        left = [pid for pid in d.pids if _alive(pid)]
        for pid in left:  # stop.sh failed: never leave a process behind
            os.kill(pid, signal.SIGKILL)
        assert p.returncode == 0 and not left, (p.stdout, p.stderr, left)


def _config(data: Path, cache: Path, name: str, extra: str = "") -> str:
    return (f"dataset='grouplens:{data}' cache-dir='{cache}' run-name='{name}' "
            f"num-server-rounds=2 eval-every=1 fraction-train=0.5 centralised-epochs=0 {extra}")


def test_two_rounds_over_tls_with_node_auth_write_final_json(deployment):
    d = deployment
    t = time.time()
    p = d.run("--run-config", _config(d.data, d.cache, "tls"), "--seeds", "0")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    run = d.out / "tls-s0"
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "ok" and final["eval_users"] == USERS and final["rounds"] == 2
    assert set(final["test"]) >= {"full_hr@10", "sampled_ndcg@10"}
    assert all(0.0 <= v <= 1.0 for v in final["test"].values())
    rounds = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["eval-users"] == USERS for r in rounds)
    assert json.loads((run / "config.json").read_text())["run-dir"] == str(run)
    assert not (run / "failed.json").exists()
    # The ServerApp said at once what it waits for, and where its results go.
    assert f"waiting for {USERS} nodes" in p.stdout and "node-timeout" in p.stdout
    assert str(run) in p.stdout
    # Nothing of the deployment in the repository.
    assert not (ROOT / "deployment").exists()
    print(f"deployed 2-round run: {time.time() - t:.0f} s")


def test_secagg_over_tls_gives_the_inprocess_result(deployment, tmp_path):
    """``secagg = true`` on the real processes (SuperNodes over TLS with node auth, the
    ClientApp's SecAgg+ mod as each SuperNode runs it): the same losses and metrics, bit for
    bit, as the in-process engine's run of the same config."""
    d = deployment
    extra = "fraction-train=1.0 secagg=true secagg-max-weight=200.0 secagg-max-count=10.0"
    p = d.run("--run-config", _config(d.data, d.cache, "secagg", extra), "--seeds", "0")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    ip = subprocess.run([sys.executable, str(ROOT / "run.py"), "--engine", "inprocess", "--out",
                         str(tmp_path / "ip"), "--seeds", "0", "--run-config",
                         _config(d.data, d.cache, "secagg", extra)],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ip.returncode == 0, ip.stdout[-4000:] + ip.stderr[-4000:]
    runs = [d.out / "secagg-s0", tmp_path / "ip" / "secagg-s0"]
    (dep, loc) = [json.loads((r / "final.json").read_text()) for r in runs]
    assert dep["status"] == "ok" and dep["test"] == loc["test"] and dep["valid"] == loc["valid"]
    (dep_r, loc_r) = [[json.loads(x) for x in (r / "rounds.jsonl").read_text().splitlines()]
                      for r in runs]
    assert [r["secagg-shares"] for r in dep_r] == [USERS, USERS]
    assert [r["train-loss"] for r in dep_r] == [r["train-loss"] for r in loc_r]


def test_unregistered_supernode_is_refused(deployment):
    d = deployment
    p = _script("start_supernodes.sh", d.dir, d.address, USERS + 1, USERS, USERS, "auto")
    d.record_pids()
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"SuperNode of user {USERS}" in p.stderr and "Failed to activate SuperNode" in p.stderr
    assert not (d.dir / "pids" / f"supernode-{USERS}.pid").exists()
    log = (d.dir / "logs" / "superlink.out").read_text()
    assert "No SuperNode found with the given public key" in log
    nodes = json.loads(d.flwr("supernode", "ls", "fedmm-test", "--format", "json").stdout)["nodes"]
    assert sum(n["status"] == "online" for n in nodes) == USERS


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            try:
                cmd = (Path("/proc") / str(c) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((c, cmd))
            todo.append(c)
    return found


def _started_run_id(text: str) -> int:
    import re

    m = re.search(r"Successfully started run (\d+)", text)
    assert m, text[-3000:]
    return int(m.group(1))


def _assert_stopped(d: Deployment, run: Path, output: str, why: str) -> None:
    run_id = _started_run_id(output)
    failed = json.loads((run / "failed.json").read_text())
    assert failed["status"] == "failed" and why in failed["reason"]
    assert f"Flower run {run_id} stopped" in failed["reason"]
    assert "stopped" in d.run_status(run_id)
    # The stopped run's ServerApp process is gone (the SuperLink and its SuperExec stay).
    link = int((d.dir / "pids" / "superlink.pid").read_text())
    for _ in range(60):
        apps = [c for c in _descendants(link) if "flwr-serverapp" in c[1]]
        if not apps:
            break
        time.sleep(0.5)
    assert not apps, apps
    time.sleep(5)  # a run that went on would write final.json after its 6 nodes: none come
    assert not (run / "final.json").exists()


def test_timeout_stops_the_flower_run_and_marks_it_failed(deployment):
    """More users than SuperNodes: the ServerApp waits for nodes (node-timeout 600 s) until
    run.py's --timeout stops the Flower run."""
    d = deployment
    p = d.run("--run-config", _config(d.big_data, d.cache, "timeout", "node-timeout=600"),
              "--seeds", "0", "--timeout", "60")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"waiting for {USERS + 2} nodes" in p.stdout
    _assert_stopped(d, d.out / "timeout-s0", p.stdout, "exceeded --timeout 60")


def test_ctrl_c_stops_the_flower_run_and_marks_it_failed(deployment):
    d = deployment
    proc = subprocess.Popen(
        ["bash", str(DEPLOY / "run.sh"), d.dir, d.address, "--out", d.out, "--seeds", "0", "1",
         "--run-config", _config(d.big_data, d.cache, "ctrlc", "node-timeout=600")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines, deadline = [], time.time() + 300
        while time.time() < deadline:  # until the ServerApp waits for its nodes
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "waiting for" in line:
                break
        assert "waiting for" in "".join(lines), "".join(lines)[-3000:]
        proc.send_signal(signal.SIGINT)  # run.sh execs run.py: this is Ctrl-C to run.py
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + out
    assert proc.returncode == 130, output[-3000:] + err[-3000:]
    assert "no further seed started" in err
    _assert_stopped(d, d.out / "ctrlc-s0", output, "interrupted (Ctrl-C)")
    assert not (d.out / "ctrlc-s1").exists()


def test_a_supernode_killed_mid_run_costs_only_its_own_updates(deployment):
    """Real processes: user 3's SuperNode is killed (SIGKILL) once round 1 is logged. The run
    goes on: the SuperLink answers its messages with 'node unavailable' once the node's
    heartbeat expires, the strategy aggregates the other replies and logs the loss, and the
    evaluation averages the users that answered (max-eval-failures), then the nodes still
    online. Runs last: it leaves the module's deployment one node short."""
    d = deployment
    victim = USERS - 1
    run = d.out / "killed-s0"
    proc = subprocess.Popen(
        ["bash", str(DEPLOY / "run.sh"), d.dir, d.address, "--out", d.out, "--seeds", "0",
         "--run-config", _config(d.data, d.cache, "killed",
                                 "num-server-rounds=3 fraction-train=1.0 max-eval-failures=0.3")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / "rounds.jsonl").exists():
            time.sleep(0.5)
        assert (run / "rounds.jsonl").exists(), "round 1 never finished"
        pid = int((d.dir / "pids" / f"supernode-{victim}.pid").read_text())
        for p in [pid] + [c for c, _ in _descendants(pid)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-4000:]
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "ok" and final["rounds"] == 3
    rounds = [json.loads(x) for x in (run / "rounds.jsonl").read_text().splitlines()]
    after = [r for r in rounds if r["round"] > 1]
    assert any(r["failures"] >= 1 and victim in r["failed-users"] for r in after), rounds
    # Evaluated without the lost user: its evaluate message failed (eval-failures) or, once the
    # SuperLink lists it offline, it is no longer sent one.
    assert any(r["eval-users"] == USERS - 1 for r in after), rounds
    assert all(r.get("eval-failures", 0) <= 1 for r in rounds), rounds
