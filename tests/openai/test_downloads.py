"""A job's adapter leaves the server through every door: the HTTP route (Range,
ETag, SHA-256), the `DownloadArtifact` RPC behind it, and `tunewire download`,
and what arrives loads in mlx-lm on the same base."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile

import httpx
import pytest

pytestmark = pytest.mark.timeout(240)


def get(stack, path: str, who: str = "alice", **headers) -> httpx.Response:
    return httpx.get(
        f"{stack.http_url}{path}", headers={"X-API-Key": stack.keys[who], **headers}, timeout=60
    )


def test_the_adapter_over_http_is_a_checked_tar_with_ranges(openai_stack, trained_job):
    whole = get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact")
    assert whole.status_code == 200, whole.text
    body = whole.content
    sha = hashlib.sha256(body).hexdigest()
    assert whole.headers["X-Checksum-Sha256"] == sha and whole.headers["ETag"] == f'"{sha}"'
    assert (
        whole.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:"
    )
    assert int(whole.headers["Content-Length"]) == len(body)
    assert f'filename="{trained_job.id}-adapter.tar"' in whole.headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        config = json.load(tar.extractfile(f"{trained_job.id}-adapter/adapter_config.json"))
    assert names == [
        f"{trained_job.id}-adapter/adapters.safetensors",
        f"{trained_job.id}-adapter/adapter_config.json",
    ]
    assert config["fine_tune_type"] == "lora"

    part = get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact", Range="bytes=100-1123")
    assert part.status_code == 206 and part.content == body[100:1124]
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(body)}"
    tail = get(
        openai_stack, f"/v1/jobs/{trained_job.id}/artifact", Range=f"bytes={len(body) - 10}-"
    )
    assert tail.status_code == 206 and tail.content == body[-10:]
    changed = get(
        openai_stack,
        f"/v1/jobs/{trained_job.id}/artifact",
        Range="bytes=100-",
        **{"If-Range": '"other"'},
    )
    assert changed.status_code == 200 and changed.content == body
    past = get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact", Range=f"bytes={len(body) + 5}-")
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(body)}"


def test_one_file_a_checkpoint_and_other_tenants(openai_stack, trained_job):
    config = get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact?file=adapter_config.json")
    assert config.status_code == 200 and config.headers["Content-Type"].startswith(
        "application/json"
    )
    assert json.loads(config.content)["num_layers"] >= 1
    step = get(
        openai_stack,
        f"/v1/jobs/{trained_job.id}/artifact?kind=ARTIFACT_KIND_CHECKPOINT&checkpoint_step=4"
        "&file=adapters.safetensors",
    )
    assert step.status_code == 200 and len(step.content) > 0
    missing = get(
        openai_stack,
        f"/v1/jobs/{trained_job.id}/artifact?kind=ARTIFACT_KIND_CHECKPOINT&checkpoint_step=3",
    )
    assert missing.status_code == 404
    bad = get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact?file=../state.db")
    assert bad.status_code == 400 and "adapters.safetensors" in bad.text
    assert get(openai_stack, f"/v1/jobs/{trained_job.id}/artifact", who="bob").status_code == 404


def run_cli(stack, *args, cwd):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tunewire.cli.main",
            "download",
            *args,
            "--address",
            stack.grpc_address,
            "--api-key",
            stack.keys["alice"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_tunewire_download_resumes_and_mlx_lm_loads_the_adapter(
    openai_stack, trained_job, tmp_path
):
    out = tmp_path / "adapter"
    first = run_cli(openai_stack, trained_job.id, "-o", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    weights = out / "adapters.safetensors"
    whole = weights.read_bytes()
    # An interrupted download: half a file left as .part; the rerun fetches the rest.
    weights.unlink()
    (out / "adapters.safetensors.part").write_bytes(whole[: len(whole) // 2])
    again = run_cli(openai_stack, trained_job.id, "-o", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert weights.read_bytes() == whole and "fetched now" in again.stdout

    checkpoint = run_cli(openai_stack, trained_job.id, "--checkpoint", "8", cwd=tmp_path)
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert (tmp_path / f"{trained_job.id}-checkpoint-8" / "adapters.safetensors").is_file()

    load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mlx_lm import load, generate; "
            "m, t = load(sys.argv[1], adapter_path=sys.argv[2]); "
            "print(repr(generate(m, t, prompt='What is LoRA?', max_tokens=4)))",
            str(openai_stack.model_dir),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode == 0, load.stderr
