"""Attention kept within each packed record, through mlx-lm's own model code.

mlx-lm's models (Llama, Qwen2, Mistral, ...) build their attention mask from
the cache they are given (`create_attention_mask` asks `cache.make_mask`),
rotate by `cache.offset` and store keys and values with
`cache.update_and_fetch`. `SegmentCache` is a cache that stores nothing and
answers with the block-diagonal causal mask of a packed row: query i sees key
j only when j <= i and both belong to the same record. Passing one per block
puts that mask into every attention layer without copying any model's code.

Positions are not restarted per record: they continue across a row, as in
many packers. For RoPE models this changes nothing the model computes beyond
float rounding, because attention sees only within-record pairs and RoPE's
score depends on the distance between query and key, not where they are
(the packing test compares packed and unpacked loss and gradients). A model
with absolute positions, or one that does not take its mask from the cache,
fails `check_packing` and the job is refused with a named error.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx import nn

from tunewire.reasons import Reason
from tunewire.trainer.worker.errors import WorkerError


def segment_mask(segments: mx.array) -> mx.array:
    """(rows, 1, L, L) bool: causal, and within one segment (segments: (rows, L) int)."""
    length = segments.shape[1]
    same = segments[:, None, :, None] == segments[:, None, None, :]
    causal = mx.arange(length)[:, None] >= mx.arange(length)[None, :]
    return same & causal


class SegmentCache:
    """A stand-in for an mlx-lm KV cache during a training forward pass (see the module)."""

    offset = 0

    def __init__(self, mask: mx.array):
        self.mask = mask

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        return keys, values

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        if window_size is None:
            return self.mask
        rows = mx.arange(n)[:, None]
        return self.mask & (rows < mx.arange(n)[None, :] + window_size)


def segment_caches(model: nn.Module, segments: mx.array) -> list[SegmentCache]:
    """One cache per block for the model's inputs' segment ids (rows, L)."""
    cache = SegmentCache(segment_mask(segments))
    return [cache] * len(model.layers)


def check_packing(model: nn.Module) -> None:
    """Refuses packing for a model whose records would see each other: two records packed
    in one row must give each the logits it has alone."""
    training = model.training
    model.eval()
    try:
        vocab = int(model.model.embed_tokens.weight.shape[0])
        first = [(7919 * i) % vocab for i in range(1, 6)]
        second = [(104729 * i) % vocab for i in range(1, 8)]
        packed = mx.array([first + second], dtype=mx.int32)
        segments = mx.array([[1] * len(first) + [2] * len(second)], dtype=mx.int32)
        got = model(packed, cache=segment_caches(model, segments))
        alone = [model(mx.array([part], dtype=mx.int32)) for part in (first, second)]
        want = mx.concatenate(alone, axis=1)
        ok = np.allclose(np.array(got, np.float32), np.array(want, np.float32), 1e-3, 1e-3)
    except (AttributeError, TypeError, ValueError) as exc:
        ok, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = "its records' logits change when packed together"
    finally:
        model.train(training)
    if not ok:
        kind = getattr(getattr(model, "args", None), "model_type", type(model).__name__)
        raise WorkerError(
            Reason.UNSUPPORTED,
            f"hyperparameters.packing is not supported for this model ({kind}): {why}; "
            "set packing to false",
        )
