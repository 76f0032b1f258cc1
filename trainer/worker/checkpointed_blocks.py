"""Gradient checkpointing of chosen transformer blocks, leaving their class alone.

mlx-lm's `grad_checkpoint(layer)` replaces `type(layer).__call__`: every block of
that class in the process is checkpointed, including those of a model loaded
later (a reference model, the next job's model in the same process). Here each
chosen block instance is moved to a subclass whose `__call__` runs the block
under `mx.checkpoint`: only those blocks recompute their activations in the
backward pass, and parameter names (and so saved adapters) stay the same.
"""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

from tunewire.reasons import Reason
from tunewire.trainer.worker.errors import WorkerError

_CHECKPOINTED: dict[type, type] = {}


def checkpoint_blocks(layers: list[nn.Module], count: int) -> int:
    """Checkpoints the first `count` blocks (0: every block); returns how many."""
    if count > len(layers):
        # The daemon checks this against config.json when it can read it; a model it could
        # not inspect is caught here.
        raise WorkerError(
            Reason.INVALID_CONFIG,
            f"hyperparameters.gradient_checkpointing_blocks is {count} but the model has "
            f"{len(layers)} blocks",
        )
    chosen = layers if count == 0 else layers[:count]
    for block in chosen:
        block.__class__ = _checkpointed_class(type(block))
    return len(chosen)


def is_checkpointed(block: nn.Module) -> bool:
    return type(block) in _CHECKPOINTED.values()


def _checkpointed_class(cls: type) -> type:
    if cls in _CHECKPOINTED.values():
        return cls
    if cls not in _CHECKPOINTED:
        call = cls.__call__

        def __call__(self, *args, **kwargs):
            def run(params, *args, **kwargs):
                self.update(params)
                return call(self, *args, **kwargs)

            return mx.checkpoint(run)(self.trainable_parameters(), *args, **kwargs)

        _CHECKPOINTED[cls] = type(
            cls.__name__,
            (cls,),
            {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
        )
    return _CHECKPOINTED[cls]
