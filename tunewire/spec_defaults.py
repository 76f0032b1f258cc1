"""Job-spec defaults that more than the trainer must know, in the shared layer.

The trainer fills every default into a spec (`tunewire.trainer.jobs.spec`); the
values here are the ones other parts read too (the gateway's OpenAI routes turn
a `learning_rate_multiplier` into a learning rate with them), so they have one
owner and no part imports another to learn them.
"""

from __future__ import annotations

from tunewire.v1 import training_job_pb2 as job_pb

DEFAULT_ADAPTER_LR = 1e-4
DEFAULT_FULL_LR = 1e-5

ADAPTER_METHODS = frozenset(
    {job_pb.TRAINING_METHOD_LORA, job_pb.TRAINING_METHOD_QLORA, job_pb.TRAINING_METHOD_DORA}
)


def default_learning_rate(method: int) -> float:
    """The learning rate a job gets when it sets none (an unset method is LoRA)."""
    if method in ADAPTER_METHODS or method == job_pb.TRAINING_METHOD_UNSPECIFIED:
        return DEFAULT_ADAPTER_LR
    return DEFAULT_FULL_LR
