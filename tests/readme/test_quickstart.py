"""The README's quick start, run verbatim: every sh and python block of its
"Quick start" section, in order, against a live `tunewire server` on the
default ports (the README says localhost:8200 and localhost:50051).

The test recreates what the README assumes: a working directory holding
`examples/` and the tiny model in `.tunewire/models/tiny` (what `make setup`
builds), and `tunewire` on the path. Shell variables a block assigns (JOB=...)
are carried to the next block, as they would be in one terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from tunewire.client import Client, TunewireError
from tunewire.v1 import training_job_pb2 as training_job_pb

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DEFAULT_PORTS = {50051: "gateway gRPC", 8200: "gateway HTTP", 50052: "trainer"}
BLOCK = re.compile(r"^```(sh|bash|console|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quickstart_blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quick start\n")
    end = text.find("\n## ", start + 1)
    return [(lang, code) for lang, code in BLOCK.findall(text[start : end if end > 0 else None])]


def busy_ports() -> list[str]:
    busy = []
    for port, role in DEFAULT_PORTS.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({role})")
    return busy


def assigned_variables(code: str) -> list[str]:
    return sorted(
        set(re.findall(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", code, re.MULTILINE))
    )


def test_the_quick_start_section_is_what_this_test_expects():
    blocks = quickstart_blocks()
    assert blocks[0] == ("sh", "tunewire server\n"), "the quick start starts the server first"
    assert any(lang == "python" for lang, _ in blocks)
    curls = [
        line
        for _, code in blocks
        for line in code.splitlines()
        if re.search(r"(^|\()\s*curl ", line)
    ]
    assert len(curls) >= 10
    # -f (--fail) makes an HTTP error a failed command, which this test would catch.
    assert all(re.search(r"curl -f\w* ", line) for line in curls), [
        c for c in curls if "curl -f" not in c
    ]


def test_every_quick_start_command_works_against_a_live_server(tmp_path, tiny_model_dir):
    busy = busy_ports()
    if busy:
        pytest.skip(f"the README's default ports are in use: {', '.join(busy)}")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(tiny_model_dir, tmp_path / ".tunewire" / "models" / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEWIRE_", "MLX_TRAINING_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    state = tmp_path / ".quickstart-variables"
    state.write_text("")

    (_, first), *blocks = quickstart_blocks()
    server = subprocess.Popen(
        first.split(),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        wait_for_banner(server, output)
        for number, (lang, code) in enumerate(blocks, start=2):
            if "npx " in code and shutil.which("npx") is None:
                warnings.warn(
                    f"quick start block {number} needs npx (Node.js), which is missing; not run",
                    stacklevel=1,
                )
                continue
            result = run_block(lang, code, tmp_path, env, state)
            assert result.returncode == 0, (
                f"quick start block {number} failed with status {result.returncode}:\n{code}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
            assert '{"error"' not in result.stdout, (
                f"block {number} streamed an error:\n{result.stdout[-4000:]}"
            )

        # What the blocks did, seen from the API: four jobs, all trained.
        key = (tmp_path / ".tunewire" / "dev-key").read_text().strip()
        with Client("localhost:50051", key) as client:
            jobs = client.list_jobs()
        assert len(jobs) == 4
        assert {training_job_pb.JobState.Name(j.state) for j in jobs} == {"JOB_STATE_SUCCEEDED"}
        assert {training_job_pb.TrainingMethod.Name(j.spec.method) for j in jobs} == {
            "TRAINING_METHOD_LORA",
            "TRAINING_METHOD_QLORA",
            "TRAINING_METHOD_DORA",
        }
        assert (tmp_path / ".tunewire" / "quickstart-loss.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            status = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            status = server.wait()
    assert status == 0, "".join(output)[-4000:]


def wait_for_banner(server: subprocess.Popen, output: list[str]) -> None:
    """Waits for the server's banner, then keeps draining its output (a full pipe would stall it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line:
            raise AssertionError(
                f"`tunewire server` exited with {server.wait()}: {''.join(output)}"
            )
        output.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    threading.Thread(target=lambda: output.extend(server.stdout), daemon=True).start()
    with Client("localhost:50051", api_key="") as client:
        for _ in range(100):
            try:
                if client.health() == "SERVING":
                    return
            except TunewireError:
                pass
            time.sleep(0.1)
    raise AssertionError("the gateway did not report SERVING")


def run_block(
    lang: str, code: str, cwd: Path, env: dict, state: Path
) -> subprocess.CompletedProcess:
    """One block in a fresh bash that first restores the variables earlier blocks set."""
    if lang == "python":
        body = f"{sys.executable} - <<'TUNEWIRE_PYTHON_BLOCK'\n{code}TUNEWIRE_PYTHON_BLOCK\n"
    else:
        body = code
    names = assigned_variables(code) if lang != "python" else []
    script = f"set -euo pipefail\nsource {state}\n{body}\n" + (
        f"declare -p {' '.join(names)} >> {state}\n" if names else ""
    )
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
