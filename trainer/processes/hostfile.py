"""Reads an `mlx.launch` hostfile into one "host:port" per rank.

mlx.launch's JSON is either a list of hosts or {"backend", "envs", "hosts"},
each host {"ssh": name, "ips": [...]}. For the ring backend a rank listens on
its first IP (or its ssh name) and a port; hosts other than this one get
consecutive ports from mlx.launch's default starting port, as it does.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewire.trainer.processes.launch import is_local

STARTING_PORT = 32323
MAX_HOSTFILE_BYTES = 1 << 20


class HostfileError(ValueError):
    """The hostfile cannot be used; the message says why."""


def read_hosts(path: Path) -> list[str]:
    if path.stat().st_size > MAX_HOSTFILE_BYTES:
        raise HostfileError(f"is larger than {MAX_HOSTFILE_BYTES:,} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HostfileError(f"is not JSON: {exc}") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts:
        raise HostfileError(
            'needs a non-empty list of hosts (mlx.launch\'s form: [{"ssh": ..., "ips": [...]}])'
        )
    out = []
    for rank, host in enumerate(hosts):
        if not isinstance(host, dict) or not isinstance(host.get("ssh"), str) or not host["ssh"]:
            raise HostfileError(f'hosts[{rank}] needs an "ssh" host name')
        ips = host.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(ip, str) and ip for ip in ips):
            raise HostfileError(f"hosts[{rank}].ips must be a list of addresses")
        name = ips[0] if ips else host["ssh"]
        out.append(name if is_local(host["ssh"]) and not ips else f"{name}:{STARTING_PORT + rank}")
    return out
