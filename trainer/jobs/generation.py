"""`Generate`: text from a base model plus a job's adapter, in a short-lived
worker process (the daemon never loads a model itself)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc

from tunewire import enum_words
from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.reasons import Reason
from tunewire.trainer.model_inspect import ModelUnusable, resolve_model_dir
from tunewire.trainer.paths import Roots
from tunewire.trainer.processes import blas
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

GENERATE_MODULE = "tunewire.trainer.worker.generate"
DEFAULT_MAX_TOKENS = 128
MAX_TOKENS = 4096
MAX_PROMPT_CHARS = 1 << 20
ROLES = ("system", "user", "assistant", "tool")


def check_request(req: training_service_pb.GenerateRequest) -> None:
    v: list[FieldViolation] = []
    if bool(req.prompt) == bool(req.messages):
        v.append(FieldViolation("prompt", "give exactly one of prompt and messages"))
    if len(req.prompt) > MAX_PROMPT_CHARS:
        v.append(
            FieldViolation(
                "prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(req.prompt)}"
            )
        )
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            v.append(
                FieldViolation(
                    f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {m.role!r}"
                )
            )
    if not 0 <= req.max_tokens <= MAX_TOKENS:
        v.append(
            FieldViolation(
                "max_tokens", f"must be between 1 and {MAX_TOKENS}, got {req.max_tokens}"
            )
        )
    if not 0.0 <= req.temperature <= 5.0:
        v.append(FieldViolation("temperature", f"must be between 0 and 5, got {req.temperature:g}"))
    if not 0.0 <= req.top_p <= 1.0:
        v.append(FieldViolation("top_p", f"must be in (0, 1], got {req.top_p:g}"))
    if not req.job_id and not req.model:
        v.append(FieldViolation("model", "give a job_id or a base model"))
    if v:
        raise invalid_argument(v)


def model_for_job(job: training_job_pb.TrainingJob) -> tuple[str, str | None]:
    """(model, adapter directory) to generate with for a finished job."""
    if job.artifacts.model_path and Path(job.artifacts.model_path, "config.json").is_file():
        return job.artifacts.model_path, None
    adapter = job.artifacts.adapter_path
    if adapter and Path(adapter, "adapters.safetensors").is_file():
        # The base the adapter was trained on, as the job resolved it at creation.
        return job.resolved.model_path or job.spec.model, adapter
    state = enum_words.display_word(training_job_pb.JobState, job.state).upper()
    raise ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"job {job.id} has no adapter or model yet (state {state}); generate after it finishes",
        reason=Reason.NO_ARTIFACTS,
        resource_type="training job",
        resource_name=job.id,
    )


def base_model(model: str, roots: Roots) -> str:
    try:
        return str(resolve_model_dir(model, roots))
    except ModelUnusable as exc:
        raise invalid_argument([FieldViolation("model", str(exc))]) from None


async def run_generation(
    python: str,
    model: str,
    adapter: str | None,
    req: training_service_pb.GenerateRequest,
    timeout: float,
) -> training_service_pb.GenerateResponse:
    payload = {
        "model": model,
        "adapter_path": adapter,
        "prompt": req.prompt or None,
        "messages": [{"role": m.role, "content": m.content} for m in req.messages] or None,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "temperature": req.temperature,
        "top_p": req.top_p or 1.0,
        "seed": req.seed,
    }
    proc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        GENERATE_MODULE,
        env=blas.worker_env(dict(os.environ)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"generation took longer than {timeout:g} s",
            reason=Reason.GENERATION_TIMEOUT,
        ) from None
    except asyncio.CancelledError:
        proc.kill()
        raise
    lines = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if proc.returncode != 0 or "text" not in result:
        message = (
            result.get("error")
            or err.decode("utf-8", "replace").strip().splitlines()[-1:]
            or ["unknown error"]
        )
        if isinstance(message, list):
            message = message[0]
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"generation failed: {message}",
            reason=Reason.GENERATION_FAILED,
        )
    return training_service_pb.GenerateResponse(
        text=result["text"],
        prompt_tokens=int(result.get("prompt_tokens", 0)),
        generated_tokens=int(result.get("generated_tokens", 0)),
        tokens_per_second=float(result.get("tokens_per_second", 0.0)),
        model=model,
        adapter_path=adapter or "",
    )
