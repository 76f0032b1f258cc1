"""What a `ft:` model name stands for: the succeeded job (at a checkpoint, maybe) it names,
or OpenAI's model_not_found. Shared by the models, chat and fine-tuning routes."""

from __future__ import annotations

import grpc

from tunewire.errors import build_status
from tunewire.gateway.keys import Principal
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.errors import OpenAIError
from tunewire.reasons import Reason
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb


def model_not_found(name: str) -> OpenAIError:
    status = build_status(
        grpc.StatusCode.NOT_FOUND,
        f"The model `{name}` does not exist or you do not have access to it.",
        Reason.MODEL_NOT_FOUND,
        resource_type="model",
        resource_name=name,
    )
    return OpenAIError(status, "model")


async def fine_tuned_job(
    calls: TrainerCalls, who: Principal, ref: names.ModelRef
) -> training_job_pb.TrainingJob:
    """The succeeded job a `ft:` name stands for; the whole name must match."""
    try:
        reply = await calls.training(
            "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=ref.job_id), who
        )
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise model_not_found(ref.name) from None
        raise
    job = reply.job
    expected = names.checkpoint_model(job, ref.step) if ref.step else names.fine_tuned_model(job)
    if job.state != training_job_pb.JOB_STATE_SUCCEEDED or ref.name != expected:
        raise model_not_found(ref.name)
    return job
