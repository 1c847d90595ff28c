"""A Ray cluster as a user starts it with `ray start`, token authentication on (as current Ray starts them):
`run --address host:port` completes a demo-size sweep on a head and a second node that joined with the token,
and without the token it fails with a message that says what to set. The cluster lives in a temporary HOME and
temp folder; every process the test starts is ended at the end, by session (Ray's daemons detach from `ray
start` but keep its session).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sweep_helpers import make_sweep, statuses
from test_faults import session_processes

from nada_sweep.sweep.cluster import check_address
from nada_sweep.errors import UserError

CLI = [sys.executable, "-m", "nada_sweep.cli"]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_session(session: int) -> list[int]:
    """End every process of a `ray start` session (SIGTERM, then SIGKILL); returns any that survived."""
    for signum, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        for pid in session_processes(session):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.2)
    return session_processes(session)


def ray_start(args: list[str], env: dict[str, str], sessions: list[int]) -> None:
    start = subprocess.Popen([RAY, "start", "--disable-usage-stats", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(start.pid)
    output, _ = start.communicate(timeout=240)
    assert start.returncode == 0, output


@pytest.fixture
def token_cluster(tmp_path):
    """A head node and a second node (one CPU each) with token authentication on."""
    pytest.importorskip("ray")
    home = tmp_path / "head-home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env |= {"HOME": str(home), "RAY_AUTH_MODE": "token"}
    generated = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                               timeout=120)
    assert generated.returncode == 0, generated.stderr
    token = (home / ".ray" / "auth_token").read_text().strip()
    port = free_port()
    sessions: list[int] = []
    # Ray's sockets live in its temp folder, and a socket path may not exceed 107 bytes: pytest's is too deep.
    ray_temp = tempfile.TemporaryDirectory(prefix="nada-ray-", dir="/tmp")
    try:
        ray_start(["--head", f"--port={port}", f"--temp-dir={ray_temp.name}", "--num-cpus=1",
                   "--include-dashboard=false", f"--dashboard-port={free_port()}",
                   f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   f"--metrics-export-port={free_port()}"], env, sessions)
        # The second node as on another machine: no token file, only the token the head printed.
        elsewhere = tmp_path / "worker-home"
        elsewhere.mkdir()
        ray_start([f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--dashboard-agent-listen-port={free_port()}",
                   f"--metrics-export-port={free_port()}"], env | {"HOME": str(elsewhere), "RAY_AUTH_TOKEN": token},
                  sessions)
        yield SimpleNamespace(address=f"127.0.0.1:{port}", env=env, tmp=tmp_path)
    finally:
        survivors = [pid for session in sessions for pid in stop_session(session)]
        ray_temp.cleanup()
        assert survivors == [], f"processes of the test's Ray cluster still alive: {survivors}"


@pytest.mark.slow
def test_a_sweep_runs_on_a_token_cluster_by_host_port_and_a_missing_token_is_explained(token_cluster):
    folder = token_cluster.tmp
    path = make_sweep(folder, "- {name: sketch, target: pencil sketch}\n", steps=4, eval_every=2,
                      extra="report_every: 0\ntrackers: {tensorboard: false}\n")  # k: [0, 4], one per node
    # The driver as a new user's shell has it: no RAY_AUTH_MODE, and (another machine) no token.
    stranger = {key: value for key, value in token_cluster.env.items() if key != "RAY_AUTH_MODE"}
    stranger["HOME"] = str(folder / "driver-home")
    Path(stranger["HOME"]).mkdir()
    refused = subprocess.run([*CLI, "run", str(path), "--address", token_cluster.address], env=stranger,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "uses token authentication" in refused.stderr and "set RAY_AUTH_MODE=token" in refused.stderr
    assert "ray get-auth-token" in refused.stderr and "Traceback" not in refused.stderr
    assert not (folder / "results" / "tiny" / "trials").exists()  # refused before anything was written

    done = subprocess.run([*CLI, "run", str(path), "--address", token_cluster.address], env=token_cluster.env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 trials succeeded" in done.stdout
    assert {s["status"] for s in statuses(folder / "results" / "tiny").values()} == {"ok"}


@pytest.mark.parametrize("address", ["auto", "10.1.2.3:6379", "head.example:6379", "ray://head:10001",
                                     "[::1]:6379"])
def test_addresses_run_accepts(address):
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["head", "head:port", "ray://head", ":6379", "local"])
def test_addresses_run_refuses_name_the_forms_it_takes(address):
    with pytest.raises(UserError, match=r"--address: .* is not a Ray cluster address; give auto, host:port"):
        check_address(address)
