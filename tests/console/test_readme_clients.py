"""The README's "Clients" section, run: its python, js and sh blocks against a
live trainer and gateway (the ports and the model path substituted), so what
it shows for Python, Node (clients/node and a bare proto-loader), grpcurl,
buf curl and curl keeps working. The Node client's example trains the tiny
model, watches to the end and decodes a refused job's error details."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from ..gateway.conftest import start_stack

REPO = Path(__file__).resolve().parents[2]
NODE_CLIENT = REPO / "clients" / "node"
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^```(sh|python|js)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NEEDED = ("node", "npx", "grpcurl", "curl")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        any(
            shutil.which(tool, path=f"{BIN}{os.pathsep}{os.environ['PATH']}") is None
            for tool in NEEDED
        ),
        reason=f"the README's client blocks need {', '.join(NEEDED)}",
    ),
]


def client_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Clients\n")
    end = text.index("\n## ", start + 1)
    return BLOCK.findall(text[start:end])


async def run(command: list[str], cwd: Path, env: dict) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=200)
    assert process.returncode == 0, f"{command}: {out.decode()}\n{err.decode()}"
    return out.decode() + err.decode()  # grpcurl writes errors to stderr


async def test_readme_client_blocks_run(tmp_path, tiny_model_dir):
    assert (NODE_CLIENT / "dist" / "index.js").exists(), "run `make setup` to build clients/node"
    work = tmp_path / "work"
    work.mkdir()
    for name in ("protos", "examples", "clients"):
        (work / name).symlink_to(REPO / name)
    stack = await start_stack(tmp_path, tiny_model_dir, max_running_jobs=1)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TUNEWIRE_API_KEY": stack.keys["alice"],
        "NODE_PATH": str(NODE_CLIENT / "node_modules"),
    }

    def local(code: str) -> str:
        return (
            code.replace("localhost:50051", f"127.0.0.1:{stack.gateway.grpc_port}")
            .replace("localhost:8200", f"127.0.0.1:{stack.gateway.http_port}")
            .replace(".tunewire/models/tiny", str(tiny_model_dir))
        )

    outputs = {}
    try:
        blocks = client_blocks()
        assert [lang for lang, _ in blocks] == ["python", "sh", "js", "sh", "sh"]
        for i, (lang, code) in enumerate(blocks):
            code = local(code)
            if lang == "python":
                command = [sys.executable, "-c", code]
            elif lang == "js":
                (work / "client.js").write_text(code)
                command = ["node", "client.js"]
            else:  # the Node client is built by `make setup`, not here
                code = code.replace("make node-client\n", "")
                command = ["bash", "-euo", "pipefail", "-c", code]
            outputs[i] = await run(command, work, env)
    finally:
        await stack.close()

    python, node, bare_node, grpc_tools, curl = (outputs[i] for i in range(5))
    assert "spec.model - is required" in python

    lines = [json.loads(line) for line in node.splitlines() if line.startswith("{")]
    found = {key: line[key] for line in lines for key in line if key != "event"}
    events = [line["event"] for line in lines if "event" in line]
    assert (
        found["dataset"]["valid"] is True and found["dataset"]["format"] == "DATASET_FORMAT_ALPACA"
    )
    # Every event once, in order, through the terminal state.
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["step"] for e in events if e["kind"] == "training_metrics"] == [1, 2, 3, 4]
    assert events[-1]["state"] == found["finished"] == "JOB_STATE_SUCCEEDED"
    refused = found["refused"]
    assert refused["code"] == "INVALID_ARGUMENT"
    details = {d["type"]: d for d in refused["details"]}
    assert details["google.rpc.ErrorInfo"]["domain"] == "tunewire.dev"
    fields = {v["field"] for v in details["google.rpc.BadRequest"]["field_violations"]}
    assert {"spec.lora.rank", "spec.hyperparameters.batch_size"} <= fields

    assert "JOB_STATE_SUCCEEDED" in bare_node  # the job the Node example trained
    assert "// Required. Base model" in grpc_tools  # describe shows the comments
    assert "google.rpc.BadRequest" in grpc_tools and "spec.model" in grpc_tools
    assert '"service": "tunewire-trainer"' in grpc_tools
    assert "spec.model" in curl and "field_violations" in curl
