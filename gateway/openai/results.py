"""A job's metrics file, as OpenAI writes `step_metrics.csv`:

    step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy
    1,1.52347,,,
    10,0.57719,,0.61234,

one row per training-metrics event (each report interval; OpenAI's jobs report
every step), the validation loss on the row of the step it was measured at.
Cells tunewire does not measure stay empty.
"""

from __future__ import annotations

import csv
import io

from tunewire.gateway.keys import Principal
from tunewire.gateway.openai.calls import TRAINING, TrainerCalls
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

HEADER = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.5f}"


async def results_csv(
    calls: TrainerCalls, who: Principal, job: training_job_pb.TrainingJob
) -> bytes:
    train: dict[int, float] = {}
    valid: dict[int, float] = {}
    async for reply in calls.stream(
        TRAINING,
        "WatchTrainingJob",
        training_service_pb.WatchTrainingJobRequest(job_id=job.id),
        who,
    ):
        event = reply.event
        if event.HasField("training_metrics"):
            train[event.training_metrics.step] = event.training_metrics.loss
        elif event.HasField("evaluation_metrics"):
            valid[event.evaluation_metrics.step] = event.evaluation_metrics.validation_loss
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for step in sorted(set(train) | set(valid)):
        writer.writerow((step, _number(train.get(step)), "", _number(valid.get(step)), ""))
    return out.getvalue().encode()
