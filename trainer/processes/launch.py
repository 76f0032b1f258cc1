"""The worker's command line, and how to start the ranks of a job the way `mlx.launch` does.

`worker_argv(config_path, ...)` is the one builder of the worker's command
line (the runner, the ranks, benchmarks and tests use it; `with_events_fd`
adds the events pipe for rank 0). `rank_commands(distributed, job_dir, argv)`
returns one (argv, env) per rank. The trainer daemon runs them; nothing here
starts a process.
Every rank gets `MLX_RANK` and `MLX_HOSTFILE`, a JSON file listing each rank's
"ip:port" (`[["127.0.0.1:5000"], ["127.0.0.1:5001"]]`), which is what
`mx.distributed.init(backend="ring")` reads.

Ranks on this host run directly. A rank on another host runs through ssh, as
`mlx.launch` does: that host needs passwordless ssh, the same Python
environment at the same path, and the job directory (config, data, model) at
the same path, e.g. on a shared filesystem. MPI and NCCL ranks get the same
variables plus what those backends read (`MLX_WORLD_SIZE`, `NCCL_HOST_IP`,
`NCCL_PORT`); MPI jobs are normally started by `mpirun` instead.
This module must not import mlx: the daemon calls it.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from tunewire.trainer.protocol import job_layout
from tunewire.trainer.protocol.config import DistributedSettings

HOSTFILE_NAME = job_layout.HOSTFILE
WORKER_MODULE = "tunewire.trainer.worker"
EVENTS_FD_FLAG = "--events-fd"
LOCAL_NAMES = {"", "localhost", "127.0.0.1", "::1"}


def free_port(host: str = "127.0.0.1") -> int:
    # A port the OS just handed out; the rank binds it a moment later.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _split_host(entry: str) -> tuple[str, int | None]:
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return entry, None


def is_local(host: str) -> bool:
    """Whether `host` names this machine: a loopback name, its host name, or an
    address of one of its interfaces (the README's `10.0.0.1:32323` for rank 0)."""
    if host in LOCAL_NAMES or host in (socket.gethostname(), socket.getfqdn()):
        return True
    return _binds_here(host.strip("[]"))


def _binds_here(host: str) -> bool:
    # An address is ours exactly when a socket can bind it; no interface list to parse.
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind((address[0], 0, *address[2:]))
            return True
        except OSError:
            continue
    return False


def ring_hosts(world_size: int, hosts: list[str]) -> list[str]:
    """ "ip:port" per rank: the given hosts (ports picked where missing), or loopback."""
    if hosts and len(hosts) != world_size:
        raise ValueError(f"distributed.hosts lists {len(hosts)} hosts for world_size={world_size}")
    entries = hosts or ["127.0.0.1"] * world_size
    out = []
    for entry in entries:
        host, port = _split_host(entry)
        if port is None:
            if not is_local(host):
                raise ValueError(f"distributed.hosts entry {entry!r} needs a port (host:port)")
            host = "127.0.0.1" if host in LOCAL_NAMES else host
            port = free_port()
        out.append(f"{host}:{port}")
    return out


def worker_argv(
    config_path: str | os.PathLike[str],
    *,
    python: str = sys.executable,
    resume_from: str | os.PathLike[str] | None = None,
) -> list[str]:
    """`python -m tunewire.trainer.worker --config PATH [--resume-from CHECKPOINT]`."""
    argv = [python, "-m", WORKER_MODULE, "--config", str(config_path)]
    if resume_from is not None:
        argv += ["--resume-from", str(resume_from)]
    return argv


def with_events_fd(argv: list[str], fd: int) -> list[str]:
    """Rank 0's command: the worker's, writing its events to the inherited `fd`."""
    return [*argv, EVENTS_FD_FLAG, str(fd)]


def rank_commands(
    distributed: DistributedSettings,
    job_dir: str | os.PathLike[str],
    worker: list[str],
    *,
    base_env: Mapping[str, str] | None = None,
) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, env) for every rank of a job with these distributed settings; `worker` is
    the command every rank runs (`worker_argv`).

    Writes the hostfile into `job_dir`. A single-rank job gets the plain worker
    command. `base_env` is the environment to extend (the daemon passes
    `tunewire.trainer.processes.blas.worker_env()`); default: this process's.
    """
    job_dir = Path(job_dir)
    world_size = max(1, distributed.world_size)
    backend = distributed.backend
    env = dict(os.environ if base_env is None else base_env)
    if world_size <= 1:
        return [(list(worker), env)]

    hosts = ring_hosts(world_size, list(distributed.hosts))
    hostfile = job_dir / HOSTFILE_NAME
    hostfile.write_text(json.dumps([[h] for h in hosts]), encoding="utf-8")
    master_ip, master_port = _split_host(hosts[0])
    commands = []
    for rank, entry in enumerate(hosts):
        rank_env = dict(
            env, MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile), MLX_WORLD_SIZE=str(world_size)
        )
        if backend == "nccl":
            rank_env.update(NCCL_HOST_IP=master_ip, NCCL_PORT=str(master_port))
        host, _ = _split_host(entry)
        if is_local(host):
            commands.append((list(worker), rank_env))
        else:
            commands.append((_ssh(host, worker, rank_env, job_dir), env))
    return commands


# What a remote rank must see of the daemon's environment: the distributed
# variables, and how the worker is tuned (BLAS preload and threads, unbuffered
# output, tunewire's own settings). sshd starts the command with a bare one.
EXPORTED_PREFIXES = ("MLX_", "NCCL_", "OPENBLAS_", "OMP_")
EXPORTED_NAMES = ("LD_PRELOAD", "PYTHONUNBUFFERED", "PYTHONHASHSEED")
# An ssh_config(5) file for the ssh that starts remote ranks (its key, user,
# known hosts); without it ssh reads the trainer user's ~/.ssh/config.
SSH_CONFIG_ENV = "TUNEWIRE_SSH_CONFIG"


def _ssh(host: str, worker: list[str], rank_env: Mapping[str, str], job_dir: Path) -> list[str]:
    """ssh HOST 'cd JOB_DIR; export the MLX variables; exec the worker' (as mlx.launch)."""
    exports = "".join(
        f"export {k}={shlex.quote(v)}; "
        for k, v in sorted(rank_env.items())
        if k.startswith(EXPORTED_PREFIXES) or k in EXPORTED_NAMES
    )
    script = f"cd {shlex.quote(str(job_dir))} && {exports}exec {shlex.join(worker)}"
    config = rank_env.get(SSH_CONFIG_ENV)
    # No -tt: stdin must stay a pipe, so EOF there still means "the daemon died".
    return ["ssh", *(["-F", config] if config else []), "-o", "BatchMode=yes", host, script]
