"""The seed's port-8200 routes with their field names, translated onto the RPCs.

The first tests need no training; the last two train for real on the tiny
model (LoRA on the Alpaca example, QLoRA on the ShareGPT example) and generate
with `fine-tuned/{job_id}`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tunewire.gateway.server import start_gateway

from .conftest import restart_trainer, start_stack, wait_for

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LEGACY_ROUTES = [
    ("GET", "/status"),
    ("POST", "/train/start"),
    ("GET", "/train"),
    ("GET", "/train/job-000000000000/status"),
    ("POST", "/train/job-000000000000/stop"),
    ("POST", "/datasets/validate"),
    ("POST", "/generate"),
]


@pytest.fixture
async def legacy_stack(tmp_path, tiny_model_dir):
    stack = await start_stack(tmp_path, tiny_model_dir, extra_roots=(EXAMPLES,))
    yield stack
    await stack.close()


def train_body(stack, dataset_file: Path, **overrides) -> dict:
    body = {
        "experiment_name": "seed client",
        "model_name": str(stack.model_dir),
        "epochs": 1,
        "learning_rate": 1e-4,
        "lora": {
            "use_lora": True,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "lora_target_modules": ["q_proj", "v_proj"],
            "use_qlora": False,
        },
        "dataset": {
            "dataset_path": str(dataset_file),
            "dataset_format": "alpaca",
            "batch_size": 2,
            "max_seq_length": 64,
        },
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
        "save_steps": 2,
        "output_dir": "./outputs/seed",
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


async def health_with_features(stack, http) -> dict:
    """/health answers at once; its capabilities come when the trainer's probe is done."""

    async def features():
        async with http.get(f"{stack.url}/health") as r:
            assert r.status == 200
            health = await r.json()
        assert health["status"] == "healthy"
        return health if "features" in health else None

    return await wait_for(features, "the trainer's capabilities", timeout=150, interval=0.5)


async def test_health_is_open_and_has_the_seeds_fields(legacy_stack, http):
    health = await health_with_features(legacy_stack, http)
    assert health["status"] == "healthy"
    assert health["version"] and health["service"] == "tunewire"
    assert health["features"]["lora"] is True and health["features"]["qlora"] is True
    assert health["features"]["distributed"] is True
    assert {"alpaca", "sharegpt"} <= set(health["features"]["dataset_formats"])
    assert health["active_jobs"] == 0 and health["timestamp"].endswith("Z")
    async with http.get(f"{legacy_stack.url}/health", headers={"X-API-Key": "wrong"}) as r:
        assert r.status == 401


async def test_every_other_seed_route_needs_the_key(legacy_stack, http):
    for method, path in LEGACY_ROUTES:
        for headers in ({}, {"X-API-Key": "tw_wrong"}):
            if path == "/status" and not headers:
                continue  # the seed's quick start calls it without a key
            async with http.request(method, legacy_stack.url + path, headers=headers, json={}) as r:
                assert r.status == 401, (path, headers)
                body = await r.json()
                assert body["code"] == 16 and body["detail"] == body["message"]
                assert body["status_code"] == 401
                assert body["error_type"] == "authentication_error"
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "tw_wrong" not in body["detail"]


async def test_validate_both_example_files(legacy_stack, http):
    headers = legacy_stack.headers("alice")
    expected = {"alpaca_example.json": ("alpaca", 5), "sharegpt_example.json": ("sharegpt", 3)}
    for name, (fmt, records) in expected.items():
        async with http.post(
            f"{legacy_stack.url}/datasets/validate",
            json={"file_path": str(EXAMPLES / name)},
            headers=headers,
        ) as r:
            assert r.status == 200, await r.text()
            result = await r.json()
        assert result["valid"] is True and result["format"] == fmt
        assert result["total_samples"] == records and result["errors"] == []
        assert (
            result["sample_preview"]
            and result["sample_preview"][0]["messages"][-1]["role"] == "assistant"
        )


async def test_validate_reports_bad_records_and_refuses_paths_outside_the_roots(
    legacy_stack, http, tmp_path
):
    bad = legacy_stack.data_dir / "bad.jsonl"
    bad.write_text(
        '{"instruction": "ok", "input": "", "output": "fine"}\n{"instruction": 5, "output": "x"}\n'
    )
    headers = legacy_stack.headers("alice")
    async with http.post(
        f"{legacy_stack.url}/datasets/validate", json={"file_path": str(bad)}, headers=headers
    ) as r:
        result = await r.json()
    assert result["valid"] is False
    assert result["errors"][0].startswith("line 2") and result["error_details"][0]["line"] == 2
    async with http.post(
        f"{legacy_stack.url}/datasets/validate", json={"file_path": "/etc/passwd"}, headers=headers
    ) as r:
        assert r.status == 403
        assert (await r.json())["detail"]
    async with http.post(f"{legacy_stack.url}/datasets/validate", json={}, headers=headers) as r:
        assert r.status == 422
        body = await r.json()
        assert body["status_code"] == 422 and body["error_type"] == "validation_error"
        assert body["details"][-1]["field_violations"][0]["field"] == "file_path"


async def test_train_start_errors_use_the_seeds_field_names(legacy_stack, http):
    headers = legacy_stack.headers("alice")
    body = train_body(
        legacy_stack,
        EXAMPLES / "alpaca_example.json",
        lora={"lora_r": 0},
        dataset={"max_seq_length": 3},
    )
    async with http.post(f"{legacy_stack.url}/train/start", json=body, headers=headers) as r:
        assert r.status == 400  # the trainer's refusal of the values
        error = await r.json()
    assert error["detail"] == error["message"]
    assert error["status_code"] == 400 and error["error_type"] == "bad_request"
    bad = next(d for d in error["details"] if d["@type"].endswith("BadRequest"))
    fields = {v["field"] for v in bad["field_violations"]}
    assert {"lora.lora_r", "dataset.max_seq_length"} <= fields
    assert any("(spec.lora.rank)" in v["description"] for v in bad["field_violations"])

    for broken, field in (
        ({"epochs": "three"}, "epochs"),
        ({"model_name": None}, "model_name"),
        ({"dataset": {"dataset_format": "csv"}}, "dataset.dataset_format"),
    ):
        broken_body = train_body(legacy_stack, EXAMPLES / "alpaca_example.json", **broken)
        async with http.post(
            f"{legacy_stack.url}/train/start", json=broken_body, headers=headers
        ) as r:
            assert r.status == 422  # the body does not fit the route, as FastAPI answered
            error = await r.json()
            assert error["details"][-1]["field_violations"][0]["field"] == field
    async with http.post(f"{legacy_stack.url}/train/start", data=b"{oops", headers=headers) as r:
        assert r.status == 422 and "not valid JSON" in (await r.json())["detail"]


async def test_queued_job_through_the_seed_routes(legacy_stack, http):
    """Start, status, list, counts and stop on a trainer that never starts jobs."""
    headers = legacy_stack.headers("alice")
    body = train_body(legacy_stack, EXAMPLES / "alpaca_example.json", extra_field=1)
    async with http.post(f"{legacy_stack.url}/train/start", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        started = await r.json()
    assert (
        started["status"] == "queued"
        and started["lora_enabled"] is True
        and started["method"] == "lora"
    )
    assert started["experiment_name"] == "seed client"
    assert (
        started["dataset_info"]["format"] == "alpaca"
        and started["dataset_info"]["train_records"] == 5
    )
    assert started["requested_output_dir"] == "./outputs/seed"
    assert any("extra_field" in w for w in started["warnings"])
    job_id = started["job_id"]

    async with http.get(f"{legacy_stack.url}/train/{job_id}/status", headers=headers) as r:
        status = await r.json()
    assert status["status"] == "queued" and status["progress"]["current_step"] == 0
    assert status["lora_details"]["target_modules"] is not None
    async with http.get(
        f"{legacy_stack.url}/train/{job_id}/status", headers=legacy_stack.headers("bob")
    ) as r:
        assert r.status == 404 and "not found" in (await r.json())["detail"]
    assert status["progress"]["current_epoch"] == 0 and "total_epochs" in status["progress"]
    assert set(status["metrics"]) >= {
        "loss",
        "learning_rate",
        "tokens_per_second",
        "gpu_memory_used_mb",
    }
    assert status["lora_details"]["enabled"] is True
    assert set(status["lora_details"]) >= {
        "rank",
        "alpha",
        "target_modules",
        "trainable_params",
        "total_params",
        "trainable_percentage",
    }
    assert status["dataset_details"]["format"] == "alpaca"
    assert status["dataset_details"]["total_samples"] == 5
    assert status["dataset_details"]["processed_samples"] == 0
    assert started["estimated_time"]
    async with http.get(f"{legacy_stack.url}/train?status=queued", headers=headers) as r:
        listed = await r.json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    (entry,) = listed["training_jobs"]
    assert entry["experiment_name"] == "seed client" and entry["status"] == "queued"
    assert entry["model"] == str(legacy_stack.model_dir) and entry["lora_enabled"] is True
    assert entry["started_at"] is None and entry["completed_at"] is None
    async with http.get(f"{legacy_stack.url}/status", headers=headers) as r:
        server = await r.json()
    counts = server["jobs"]
    assert counts["queued"] == 1 and counts["total"] == 1
    assert server["port"] == legacy_stack.gateway.http_port
    assert server["llm_providers"]["active_provider"] == "mlx"
    assert server["active_training_jobs"] == 0
    async with http.get(f"{legacy_stack.url}/status") as r:
        assert r.status == 200
        anonymous = await r.json()
    assert "jobs" not in anonymous and "caller" not in anonymous  # nothing of a tenant's
    assert anonymous["port"] == legacy_stack.gateway.http_port
    async with http.post(
        f"{legacy_stack.url}/train/{job_id}/stop", headers=legacy_stack.headers("bob")
    ) as r:
        assert r.status == 404
    async with http.post(f"{legacy_stack.url}/train/{job_id}/stop", headers=headers) as r:
        stopped = await r.json()
    assert stopped["status"] == "stopping" and stopped["experiment_name"] == "seed client"
    assert stopped["message"] and stopped["state"] == "JOB_STATE_CANCELLED"
    async with http.post(f"{legacy_stack.url}/train/{job_id}/stop", headers=headers) as r:
        assert r.status == 400  # FAILED_PRECONDITION: it already ended
    async with http.post(
        f"{legacy_stack.url}/generate", json={"prompt": "hi"}, headers=headers
    ) as r:
        assert (
            r.status == 422
            and (await r.json())["details"][-1]["field_violations"][0]["field"] == "model"
        )


async def test_providers_need_no_key_and_name_mlx(legacy_stack, http):
    await health_with_features(legacy_stack, http)
    async with http.get(f"{legacy_stack.url}/providers") as r:
        assert r.status == 200
        body = await r.json()
    assert body["available_providers"] == ["mlx"]
    assert body["current_provider"] == {
        "active_provider": "mlx",
        "available_providers": [{"name": "mlx", "available": True}],
    }


async def test_health_answers_while_the_trainers_probe_is_slow(tmp_path, tiny_model_dir, http):
    """A trainer whose probe of the worker environment takes long (as under load)
    is alive: /health says healthy at once, without its capabilities."""
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 60\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    stack = await start_stack(tmp_path, tiny_model_dir, trainer_options={"python": str(slow)})
    try:
        async with http.get(f"{stack.url}/health") as r:
            assert r.status == 200
            health = await r.json()
        assert health["status"] == "healthy" and "probing" in health["detail"]
        async with http.get(f"{stack.url}/providers") as r:
            assert r.status == 200
    finally:
        await stack.close()


# ---- end to end: real training on the tiny model ------------------------------------------


async def poll_until_done(http, stack, job_id: str, headers, timeout: float = 240.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = set()
    while True:
        async with http.get(f"{stack.url}/train/{job_id}/status", headers=headers) as r:
            status = await r.json()
        seen.add(status["status"])
        if status["status"] in ("completed", "failed", "cancelled"):
            status["seen"] = seen
            return status
        assert loop.time() < deadline, f"job {job_id} still {status['status']} after {timeout} s"
        await asyncio.sleep(0.5)


@pytest.mark.timeout(600)
async def test_seed_client_trains_lora_and_qlora_and_generates(tmp_path, tiny_model_dir, http):
    stack = await start_stack(tmp_path, tiny_model_dir, max_running_jobs=1, extra_roots=(EXAMPLES,))
    try:
        headers = stack.headers("alice")
        async with http.get(f"{stack.url}/health") as r:
            assert (await r.json())["status"] == "healthy"
        jobs = {}
        for kind, name, fmt, qlora in (
            ("lora", "alpaca_example.json", "alpaca", False),
            ("qlora", "sharegpt_example.json", "sharegpt", True),
        ):
            async with http.post(
                f"{stack.url}/datasets/validate",
                json={"file_path": str(EXAMPLES / name)},
                headers=headers,
            ) as r:
                assert (await r.json())["valid"] is True
            body = train_body(
                stack,
                EXAMPLES / name,
                experiment_name=f"{kind} run",
                max_steps=3,
                lora={"use_qlora": qlora},
                dataset={"dataset_format": fmt},
            )
            async with http.post(f"{stack.url}/train/start", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                started = await r.json()
            assert started["method"] == kind and started["lora_enabled"] is True
            jobs[kind] = started["job_id"]

        # Watch the LoRA job live, restart the gateway under it, resume where the
        # stream broke: the job never notices, and no event is lost or repeated.
        events_url = f"/v1/jobs/{jobs['lora']}/events"
        async with http.get(stack.url + events_url, headers=headers) as r:
            seen = [json.loads(await r.content.readline())["result"]["event"]]
            await stack.gateway.stop(grace=0.1)
            rest = [json.loads(line) async for line in r.content if line.strip()]
        # The stream ends with the reason, not a cut connection (unless the job finished first).
        if "error" in rest[-1]:
            assert rest[-1]["error"]["code"] == 14
            assert rest[-1]["error"]["details"][0]["reason"] == "GATEWAY_STOPPING"
            rest.pop()
        seen += [line["result"]["event"] for line in rest]
        stack.gateway = await start_gateway(stack.gateway.config)
        async with http.get(
            f"{stack.url}{events_url}?after_sequence={seen[-1]['sequence']}", headers=headers
        ) as r:
            seen += [
                json.loads(line)["result"]["event"] async for line in r.content if line.strip()
            ]
        assert [int(e["sequence"]) for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED"
        assert any("training_metrics" in e for e in seen)

        for kind, job_id in jobs.items():
            status = await poll_until_done(http, stack, job_id, headers)
            assert status["status"] == "completed", status
            assert status["progress"]["current_step"] == status["progress"]["total_steps"] == 3
            assert status["metrics"]["loss"] > 0 and status["metrics"]["tokens_per_second"] > 0
            details = status["lora_details"]
            assert details["enabled"] is True and details["rank"] == 4 and details["alpha"] == 8
            assert 0 < details["trainable_percentage"] < 100
            assert status["progress"]["percentage"] == 100
            assert status["dataset_details"]["processed_samples"] > 0
            assert 0 < details["trainable_params"] < details["total_params"]
            assert status["dataset_details"]["format"] == (
                "alpaca" if kind == "lora" else "sharegpt"
            )
            assert status["adapter_path"]

            async with http.post(
                f"{stack.url}/generate",
                headers=headers,
                json={
                    "prompt": "What is a token?",
                    "model": f"fine-tuned/{job_id}",
                    "max_tokens": 8,
                    "temperature": 0.0,
                    "top_p": 1.0,
                },
            ) as r:
                assert r.status == 200, await r.text()
                generated = await r.json()
            assert generated["tokens_generated"] > 0 and isinstance(generated["text"], str)
            assert generated["provider"] == "mlx" and generated["generation_time_ms"] > 0
            assert generated["adapter_path"] == status["adapter_path"]

        async with http.get(
            f"{stack.url}/train/{jobs['lora']}/status", headers=stack.headers("bob")
        ) as r:
            assert r.status == 404
        async with http.get(f"{stack.url}/train", headers=headers) as r:
            assert {j["job_id"] for j in (await r.json())["jobs"]} == set(jobs.values())
    finally:
        await stack.close()


async def test_health_is_503_while_the_trainer_is_down(legacy_stack, http):
    await health_with_features(legacy_stack, http)  # last-known info is cached now
    await legacy_stack.trainer.stop(grace=1)

    async def unhealthy():
        async with http.get(f"{legacy_stack.url}/health") as r:
            body = await r.json()
            return (r.status, body) if r.status == 503 else None

    _, body = await wait_for(unhealthy, "/health to say the trainer is down", timeout=30)
    assert body["status"] == "unhealthy" and body["detail"]
    await restart_trainer(legacy_stack)
    await wait_for(lambda: legacy_stack.gateway.trainer_health.serving, "the trainer back")
    await health_with_features(legacy_stack, http)
