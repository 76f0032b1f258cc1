"""Two hosts on one machine: Linux network namespaces joined by a veth pair,
with Debian's sshd running in the second under a key made for the test.

Nothing here has a route anywhere else: each namespace holds its loopback and
its end of the veth pair, so what the ranks send stays between the two. The
filesystem is shared, which stands in for the shared storage a real cluster
mounts at the same path on every host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# Addresses of the two test hosts; they exist only inside the namespaces.
ADDRESS_A = "10.251.16.1"
ADDRESS_B = "10.251.16.2"


class HostsUnavailable(Exception):
    """This machine cannot build the two hosts (not root, no namespaces); the message says why."""


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _check(*argv: str) -> str:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass
class TwoHosts:
    root: Path
    tag: str = field(default_factory=lambda: f"tw{os.getpid() % 100000}")
    sshd: subprocess.Popen | None = None
    created: list[str] = field(default_factory=list)

    @property
    def ns_a(self) -> str:
        return f"{self.tag}a"

    @property
    def ns_b(self) -> str:
        return f"{self.tag}b"

    @property
    def veth_a(self) -> str:
        return f"{self.tag}va"

    @property
    def veth_b(self) -> str:
        return f"{self.tag}vb"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    # ---- building -------------------------------------------------------------

    def build(self) -> TwoHosts:
        if os.geteuid() != 0:
            raise HostsUnavailable(
                "needs root: the two hosts are Linux network namespaces (ip netns) joined by a veth pair"
            )
        if shutil.which("ip") is None:
            raise HostsUnavailable("needs iproute2's `ip` to build network namespaces")
        for ns in (self.ns_a, self.ns_b):
            _run("ip", "netns", "del", ns)  # a leftover of an interrupted run
            done = _run("ip", "netns", "add", ns)
            if done.returncode != 0:
                raise HostsUnavailable(
                    f"cannot create a network namespace here: {done.stderr.strip()}"
                )
            self.created.append(ns)
        _check("ip", "link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
        for ns, veth, address in (
            (self.ns_a, self.veth_a, ADDRESS_A),
            (self.ns_b, self.veth_b, ADDRESS_B),
        ):
            _check("ip", "link", "set", veth, "netns", ns)
            _check("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", veth)
            _check("ip", "-n", ns, "link", "set", veth, "up")
            _check("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def start_sshd(self) -> None:
        """sshd in host B, root login by the test's key only; ssh_config for host A's ssh."""
        if not os.path.exists(SSHD):
            raise AssertionError(
                f"{SSHD} is missing: install Debian's openssh-server (`.ci/run` does)"
            )
        keys = self.root / "ssh"
        keys.mkdir(mode=0o700)
        for name in ("host_key", "client_key"):
            _check("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name))
        (keys / "authorized_keys").write_text((keys / "client_key.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        config = keys / "sshd_config"
        config.write_text(
            f"ListenAddress {ADDRESS_B}\nPort 22\nHostKey {keys / 'host_key'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {keys / 'sshd.pid'}\nLogLevel ERROR\n"
        )
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, SSHD, "-D", "-e", "-f", str(config)],
            stdout=(self.root / "sshd.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        self.ssh_config.write_text(
            f"Host {ADDRESS_B}\n  User root\n  IdentityFile {keys / 'client_key'}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
            f"  UserKnownHostsFile {keys / 'known_hosts'}\n  LogLevel ERROR\n  ConnectTimeout 5\n"
        )
        deadline = time.monotonic() + 30
        while True:
            done = _run(*self.in_a("ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                                   ADDRESS_B, "true"))  # fmt: skip
            if done.returncode == 0:
                return
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"sshd in {self.ns_b} did not accept the test's key: {done.stderr.strip()}\n"
                    + (self.root / "sshd.log").read_text()
                )
            time.sleep(0.2)

    # ---- using ----------------------------------------------------------------

    def in_a(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def link_bytes(self) -> dict[str, int]:
        """Bytes host B's end of the veth pair has received and sent."""
        (link,) = json.loads(_check("ip", "-j", "-s", "-n", self.ns_b, "link", "show", self.veth_b))
        stats = link["stats64"]
        return {"rx": stats["rx"]["bytes"], "tx": stats["tx"]["bytes"]}

    def routes(self, ns: str) -> list[str]:
        return [r.strip() for r in _check("ip", "-n", ns, "route").splitlines() if r.strip()]

    def links(self, ns: str) -> list[str]:
        return [link["ifname"] for link in json.loads(_check("ip", "-j", "-n", ns, "link", "show"))]

    def close(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        for ns in self.created:
            _run("ip", "netns", "del", ns)  # the veth pair goes with them
