"""How a rank on another host is started: over ssh, with the daemon's settings."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tunewire.trainer.processes.launch import is_local, rank_commands, worker_argv
from tunewire.trainer.protocol.config import DistributedSettings

REMOTE = "192.0.2.7"  # TEST-NET-1: never an address of this machine, never contacted


def _own_addresses() -> list[str]:
    try:
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return [
        a["local"]
        for link in json.loads(out.stdout)
        for a in link.get("addr_info", [])
        if a.get("family") == "inet" and not a["local"].startswith("127.")
    ]


def test_an_address_of_one_of_this_machines_interfaces_is_this_host():
    addresses = _own_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to test with")
    assert all(is_local(a) for a in addresses)
    assert is_local("127.0.0.1") and is_local("localhost")
    assert not is_local(REMOTE) and not is_local("no-such-host.invalid")


def test_a_remote_rank_runs_over_ssh_with_the_config_and_the_workers_environment(tmp_path):
    distributed = DistributedSettings(
        world_size=2, backend="ring", hosts=["127.0.0.1:5000", f"{REMOTE}:5001"]
    )
    worker = worker_argv(tmp_path / "worker_config.json")
    env = {
        "PATH": "/usr/bin",
        "LD_PRELOAD": "/usr/lib/libopenblas.so.0",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "TUNEWIRE_SSH_CONFIG": str(tmp_path / "ssh_config"),
        "SECRET_TOKEN": "not for the remote host",
    }
    (local_argv, local_env), (remote_argv, _) = rank_commands(
        distributed, tmp_path, worker, base_env=env
    )
    assert local_env["MLX_RANK"] == "0" and local_argv[1:3] == ["-m", "tunewire.trainer.worker"]
    assert remote_argv[:5] == ["ssh", "-F", str(tmp_path / "ssh_config"), "-o", "BatchMode=yes"]
    assert remote_argv[5] == REMOTE
    script = remote_argv[6]
    assert script.startswith(f"cd {shlex.quote(str(tmp_path))} && ")
    for exported in (
        "MLX_RANK=1",
        "MLX_WORLD_SIZE=2",
        f"MLX_HOSTFILE={tmp_path / 'mlx_hostfile.json'}",
        "LD_PRELOAD=/usr/lib/libopenblas.so.0",
        "OPENBLAS_NUM_THREADS=1",
        "PYTHONUNBUFFERED=1",
    ):
        assert f"export {exported};" in script, script
    assert "SECRET_TOKEN" not in script and "PATH=" not in script.replace("MLX_HOSTFILE", "")
    assert json.loads((tmp_path / "mlx_hostfile.json").read_text()) == [
        ["127.0.0.1:5000"],
        [f"{REMOTE}:5001"],
    ]
