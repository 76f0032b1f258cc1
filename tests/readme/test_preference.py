"""The README's "Preference fine-tuning" section, run verbatim: its sh and python blocks, in
order, against a live `tunewire server` on the default ports, as the quick start's test does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tunewire.client import Client
from tunewire.v1 import training_job_pb2 as training_job_pb

from .test_quickstart import BLOCK, README, REPO, busy_ports, run_block, wait_for_banner

pytestmark = pytest.mark.timeout(600)

TITLE = "\n## Preference fine-tuning (DPO, ORPO)\n"


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index(TITLE)
    end = text.find("\n## ", start + 1)
    return BLOCK.findall(text[start:end])


def test_the_section_shows_a_dpo_job_from_yaml_curl_and_python():
    blocks = section_blocks()
    code = "\n".join(code for _, code in blocks)
    assert [lang for lang, _ in blocks] == ["sh", "sh", "python"]
    assert "train_mode: dpo" in code and "curl -fsS" in code and "create_job(" in code


def test_every_command_of_the_section_works_against_a_live_server(tmp_path, tiny_model_dir):
    busy = busy_ports()
    if busy:
        pytest.skip(f"the README's default ports are in use: {', '.join(busy)}")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(tiny_model_dir, tmp_path / ".tunewire" / "models" / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEWIRE_", "MLX_TRAINING_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    state = tmp_path / ".section-variables"
    state.write_text("")
    server = subprocess.Popen(
        ["tunewire", "server"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        wait_for_banner(server, output)
        env["TUNEWIRE_API_KEY"] = (tmp_path / ".tunewire" / "dev-key").read_text().strip()
        outputs = []
        for number, (lang, code) in enumerate(section_blocks(), start=1):
            result = run_block(lang, code, tmp_path, env, state)
            assert result.returncode == 0, (
                f"block {number} failed with status {result.returncode}:\n{code}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
            assert '{"error"' not in result.stdout, result.stdout[-4000:]
            outputs.append(result.stdout)
        assert "acc " in outputs[0] and "validation reward accuracy 0.50 (step 0)" in outputs[0]
        assert "step 0: validation loss 0.693, reward accuracy 0.50" in outputs[2]

        with Client("localhost:50051", env["TUNEWIRE_API_KEY"]) as client:
            jobs = client.list_jobs()
        assert len(jobs) == 3
        assert {training_job_pb.JobState.Name(j.state) for j in jobs} == {"JOB_STATE_SUCCEEDED"}
        methods = sorted(
            training_job_pb.PreferenceMethod.Name(j.spec.preference.method) for j in jobs
        )
        assert methods == [
            "PREFERENCE_METHOD_DPO",
            "PREFERENCE_METHOD_DPO",
            "PREFERENCE_METHOD_DPO",
        ]
        assert all(j.latest_metrics.HasField("preference") for j in jobs)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            status = server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            status = server.wait()
    assert status == 0, "".join(output)[-4000:]
