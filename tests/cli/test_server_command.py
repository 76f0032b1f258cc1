"""`tunewire server`: trainer and gateway in one foreground process, the development
key on loopback, a clear refusal when the ports are taken, a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tunewire.cli.server import ServerOptions, choose_keys
from tunewire.client import Client, TunewireError

from .services import CLI, free_port

pytestmark = pytest.mark.timeout(180)


def server_env(ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEWIRE_", "MLX_TRAINING_"))}
    env.update(
        TUNEWIRE_GRPC_LISTEN=f"127.0.0.1:{ports['grpc']}",
        TUNEWIRE_HTTP_LISTEN=f"127.0.0.1:{ports['http']}",
        TUNEWIRE_TRAINER_LISTEN=f"127.0.0.1:{ports['trainer']}",
        TUNEWIRE_ADDRESS=f"127.0.0.1:{ports['grpc']}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start(cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "server"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_banner(server: subprocess.Popen) -> str:
    """stdout up to 'Press Ctrl-C to stop.'"""
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            raise AssertionError(f"server exited: {server.wait()} {server.stderr.read()}")
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return "".join(lines)
    raise AssertionError("no banner in 60 s")


def wait_serving(address: str) -> None:
    with Client(address, api_key="") as client:
        for _ in range(100):
            try:
                if client.health() == "SERVING":
                    return
            except TunewireError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"{address} not serving")


@pytest.fixture
def ports() -> dict[str, int]:
    return {"grpc": free_port(), "http": free_port(), "trainer": free_port()}


def test_server_runs_both_with_a_development_key_and_stops_on_ctrl_c(tmp_path, ports):
    env = server_env(ports)
    server = start(tmp_path, env)
    try:
        banner = read_banner(server)
        wait_serving(env["TUNEWIRE_ADDRESS"])
        key_file = tmp_path / ".tunewire" / "dev-key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert f"gateway gRPC  127.0.0.1:{ports['grpc']}" in banner
        assert f"gateway HTTP  http://127.0.0.1:{ports['http']}" in banner
        assert (
            f"trainer       127.0.0.1:{ports['trainer']}   (this host only, internal credential required)"
            in banner
        )
        assert key.startswith("tw_dev_") and key in banner
        assert "export TUNEWIRE_API_KEY=$(cat .tunewire/dev-key)" in banner

        # The CLI on this machine finds the key by itself; curl sends it as X-API-Key.
        jobs = subprocess.run(
            [*CLI, "jobs"],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert jobs.returncode == 0 and "no jobs yet" in jobs.stdout, jobs.stderr
        url = f"http://127.0.0.1:{ports['http']}/v1/jobs"
        with urllib.request.urlopen(
            urllib.request.Request(url, headers={"X-API-Key": key}), timeout=10
        ) as reply:
            assert json.load(reply).get("jobs", []) == []
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401

        # The trainer port takes only its internal credential, the owner-only file the
        # trainer made in the home: the CLI of the same user and home gets in by
        # itself, a home without it (another user, another checkout) does not.
        credential = tmp_path / ".tunewire" / "internal-token"
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        trainer = f"127.0.0.1:{ports['trainer']}"
        direct = subprocess.run(
            [*CLI, "jobs", "--address", trainer],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert direct.returncode == 0 and "no jobs yet" in direct.stdout, direct.stderr
        stranger = subprocess.run(
            [*CLI, "jobs", "--address", trainer],
            check=False,
            cwd=tmp_path,
            env={**env, "TUNEWIRE_HOME": str(tmp_path / "elsewhere")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        [line] = stranger.stderr.strip().splitlines()
        assert (
            stranger.returncode == 1 and "accepts calls only with its internal credential" in line
        )

        # A second server on the same ports is refused with one clear line.
        second = subprocess.run(
            [*CLI, "server"],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "Traceback" not in second.stderr
        [line] = second.stderr.strip().splitlines()
        assert f"127.0.0.1:{ports['grpc']} (gateway gRPC) is in use" in line
        assert "another `tunewire server` may be running" in line

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
        rest = server.stdout.read()
        assert "stopping" in rest and "tunewire server: stopped" in rest
    finally:
        if server.poll() is None:
            server.kill()


def test_a_key_from_the_environment_replaces_the_development_key(tmp_path, ports):
    (tmp_path / ".tunewire").mkdir()
    (tmp_path / ".tunewire" / "dev-key").write_text("tw_dev_stale\n")
    env = server_env(ports, TUNEWIRE_API_KEY="tw_env_key_123")
    server = start(tmp_path, env)
    try:
        banner = read_banner(server)
        assert "development key" not in banner and "TUNEWIRE_API_KEY from the environment" in banner
        assert not (tmp_path / ".tunewire" / "dev-key").exists()  # clients must not send a dead key
        wait_serving(env["TUNEWIRE_ADDRESS"])
        with Client(env["TUNEWIRE_ADDRESS"], "tw_env_key_123") as client:
            assert client.list_jobs() == []
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def test_no_development_key_when_other_hosts_could_reach_the_gateway(tmp_path):
    options = ServerOptions(
        home=tmp_path,
        grpc_listen="0.0.0.0:50051",
        http_listen="127.0.0.1:8200",
        trainer_listen="127.0.0.1:50052",
        keys_file=tmp_path / "keys.yaml",
        data_roots=(),
        max_running_jobs=1,
        dev_key=True,
    )
    assert choose_keys(options, environ={}) == ((), "")
    assert not (tmp_path / "dev-key").exists()
    loopback = ServerOptions(**{**options.__dict__, "grpc_listen": "localhost:50051"})
    keys, dev_key = choose_keys(loopback, environ={})
    assert keys == () and dev_key == (tmp_path / "dev-key").read_text().strip()
