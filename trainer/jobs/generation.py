"""`Generate` and `StreamGenerate`: the request checked, the model and adapter it
names resolved, and the request as the resident inference worker takes it
(`trainer/inference/`; the daemon never loads a model itself)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from tunewire import enum_words
from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.reasons import Reason
from tunewire.trainer.model_inspect import ModelUnusable, resolve_model_dir
from tunewire.trainer.paths import Roots
from tunewire.trainer.protocol import inference
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

DEFAULT_MAX_TOKENS = 128
MAX_TOKENS = 4096
MAX_PROMPT_CHARS = 1 << 20
ROLES = ("system", "user", "assistant", "tool")
MAX_STOP = 4
MAX_MESSAGES = 1024


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
    # The messages' text is bounded as the prompt's is: without it a 2 MB chat
    # message went to the inference worker whole and held it for minutes.
    chat_chars = sum(len(m.content) for m in req.messages)
    if chat_chars > MAX_PROMPT_CHARS:
        v.append(
            FieldViolation(
                "messages", f"at most {MAX_PROMPT_CHARS} characters of content, got {chat_chars}"
            )
        )
    if len(req.messages) > MAX_MESSAGES:
        v.append(
            FieldViolation("messages", f"at most {MAX_MESSAGES} messages, got {len(req.messages)}")
        )
    for i, m in enumerate(req.messages[:MAX_MESSAGES]):
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
    if len(req.stop) > MAX_STOP or any(not s for s in req.stop):
        v.append(FieldViolation("stop", f"at most {MAX_STOP} non-empty strings"))
    if req.checkpoint_step and not req.job_id:
        v.append(FieldViolation("checkpoint_step", "needs a job_id"))
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


def quantization_of(adapter: str | None) -> inference.Quantization | None:
    """The quantization an adapter was trained against (QLoRA on a float base), from its config."""
    if not adapter:
        return None
    try:
        config = json.loads(Path(adapter, "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the worker reports the unreadable adapter
    found = config.get("quantization") or (config.get("tunewire") or {}).get("quantization")
    if not isinstance(found, dict) or "bits" not in found or "group_size" not in found:
        return None
    return inference.Quantization(bits=int(found["bits"]), group_size=int(found["group_size"]))


def adapter_at_step(job: training_job_pb.TrainingJob, checkpoints, step: int) -> str:
    """The adapter directory of the job's checkpoint at `step`."""
    found = next((c for c in checkpoints if c.step == step), None)
    if found is None or not Path(found.path, "adapters.safetensors").is_file():
        raise invalid_argument(
            [FieldViolation("checkpoint_step", f"job {job.id} has no checkpoint at step {step}")]
        )
    if job.spec.method == training_job_pb.TRAINING_METHOD_FULL:
        raise invalid_argument(
            [FieldViolation("checkpoint_step", "a FULL job's checkpoints are not adapters")]
        )
    return found.path


def worker_request(
    model: str, adapter: str | None, req: training_service_pb.GenerateRequest
) -> inference.Generate:
    return inference.Generate(
        id=0,
        model=model,
        adapter_path=adapter,
        quantization=quantization_of(adapter),
        prompt=req.prompt or None,
        messages=[inference.Message(role=m.role, content=m.content) for m in req.messages] or None,
        max_tokens=req.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=req.temperature,
        top_p=req.top_p or 1.0,
        seed=req.seed,
        stop=list(req.stop),
    )


def summary(
    done: inference.Finished, model: str, adapter: str | None
) -> training_service_pb.GenerateResponse:
    return training_service_pb.GenerateResponse(
        text=done.text,
        prompt_tokens=done.prompt_tokens,
        generated_tokens=done.generated_tokens,
        tokens_per_second=done.tokens_per_second,
        model=model,
        adapter_path=adapter or "",
        finish_reason=done.finish_reason,
        model_loaded=done.model_loaded,
        first_token_seconds=done.first_token_seconds,
    )
