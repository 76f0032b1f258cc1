"""The official openai Node SDK (from npm) runs the whole fine-tuning flow against
tunewire with only baseURL and apiKey changed (tests/openai/node/flow.mjs). Built by
`make setup` where Node is present; skipped, saying why, where it is not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import EXAMPLES

pytestmark = pytest.mark.timeout(420)

FLOW = Path(__file__).resolve().parent / "node"


def run_flow(stack) -> dict[str, dict]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (FLOW / "node_modules" / "openai").is_dir():
        pytest.skip("the openai Node SDK is not installed: run `make setup` (needs npm)")
    env = {
        **os.environ,
        "TUNEWIRE_BASE_URL": stack.base_url,
        "TUNEWIRE_KEY": stack.keys["bob"],
        "TUNEWIRE_MODEL": str(stack.model_dir),
        "TUNEWIRE_FILE": str(EXAMPLES / "alpaca_example.json"),
    }
    done = subprocess.run(
        ["node", "flow.mjs"], cwd=FLOW, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {s.pop("step"): s for s in steps}


def test_the_openai_node_sdk_fine_tunes_and_chats(openai_stack):
    steps = run_flow(openai_stack)
    assert steps["file"]["object"] == "file" and steps["file"]["purpose"] == "fine-tune"
    assert steps["file"]["bytes"] == (EXAMPLES / "alpaca_example.json").stat().st_size
    assert steps["created"]["n_epochs"] == 2 and steps["created"]["status"] in ("queued", "running")

    done = steps["done"]
    assert done["status"] == "succeeded", done["error"]
    job_id = steps["created"]["id"]
    assert done["fine_tuned_model"] == f"ft:tiny:node:{job_id}" and done["trained_tokens"] > 0

    # The SDK's paginator walked every page of 2: all events, newest first, each once.
    events = steps["events"]
    assert events["count"] > 4 and len(set(events["ids"])) == events["count"]
    assert events["created"] == sorted(events["created"], reverse=True)
    assert events["first"].startswith("The job has successfully completed")

    checkpoints = steps["checkpoints"]
    assert checkpoints["steps"] == sorted(checkpoints["steps"], reverse=True)
    assert len(checkpoints["steps"]) >= 1 and all(loss > 0 for loss in checkpoints["train_loss"])
    assert (
        checkpoints["models"][0]
        == f"{done['fine_tuned_model']}:ckpt-step-{checkpoints['steps'][0]}"
    )

    chat = steps["chat"]
    assert chat["object"] == "chat.completion" and chat["model"] == done["fine_tuned_model"]
    assert chat["completion_tokens"] > 0 and chat["finish"] in ("stop", "length")
    assert steps["stream"]["content"] == chat["content"] and steps["stream"]["chunks"] >= 2

    assert done["fine_tuned_model"] in steps["models"]["ids"]
    assert steps["error"] == {
        "status": 404,
        "type": "invalid_request_error",
        "name": "NotFoundError",
    }
