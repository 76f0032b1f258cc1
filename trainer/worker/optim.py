"""The optimizer and its learning-rate schedule, built from the job's hyperparameters."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.optimizers as optim

from tunewire.trainer.protocol.config import Hyperparameters


def total_steps(hp: Hyperparameters, batches_per_epoch: int) -> int:
    """max_steps, or enough optimizer steps for `epochs` passes (a step is grad-accum batches)."""
    if hp.max_steps > 0:
        return hp.max_steps
    return max(1, math.ceil(hp.epochs * batches_per_epoch / hp.gradient_accumulation_steps))


def learning_rate_schedule(hp: Hyperparameters, steps: int):
    """Linear warmup from 0, then constant, cosine or linear decay to min_learning_rate.

    Follows mlx-lm's `build_schedule`: the warmup reaches the peak at update
    `warmup_steps`, and the decay runs over the updates left after it.
    """
    peak, floor, warmup = hp.learning_rate, hp.min_learning_rate, hp.warmup_steps
    decay_steps = max(steps - warmup - (1 if warmup else 0), 1)
    if hp.learning_rate_schedule == "cosine":
        main = optim.cosine_decay(peak, decay_steps, floor)
    elif hp.learning_rate_schedule == "linear":
        main = optim.linear_schedule(peak, floor, decay_steps)
    elif warmup:

        def main(_step):
            return mx.array(peak, mx.float32)
    else:
        return peak
    if not warmup:
        return main
    return optim.join_schedules([optim.linear_schedule(0.0, peak, warmup), main], [warmup + 1])


def build_optimizer(hp: Hyperparameters, steps: int) -> optim.Optimizer:
    lr = learning_rate_schedule(hp, steps)
    if hp.optimizer == "adamw":
        return optim.AdamW(
            learning_rate=lr, weight_decay=hp.weight_decay, bias_correction=hp.bias_correction
        )
    if hp.optimizer == "adam":
        return optim.Adam(learning_rate=lr, bias_correction=hp.bias_correction)
    if hp.optimizer == "sgd":
        return optim.SGD(learning_rate=lr, weight_decay=hp.weight_decay)
    # relative_step=False: use our learning rate and schedule, not Adafactor's own.
    return optim.Adafactor(learning_rate=lr, relative_step=False, weight_decay=hp.weight_decay)
