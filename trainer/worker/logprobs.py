"""Log-likelihoods at trained positions only: the loss of SFT and the sequence log-probs of
preference losses, one door for both.

The host knows which targets train (a batch's mask), so it lists those
positions once (`trained_positions`); the model runs its body over the whole
batch, the final hidden states are gathered at the listed positions, and only
those rows meet the vocabulary, a chunk at a time (`chunked_ce`). Prompt and
padding positions never touch the output head. The list is padded to a few
bucketed lengths (weight 0 on the padding) so the compiled step sees few shapes.

    positions = trained_positions(batch.mask)          # numpy, on the host
    nll = token_nll(model, tokens, positions.arrays())  # (P,) per listed position
    logps = sequence_logprobs(model, tokens, positions.arrays())  # (rows,)

A model whose output head cannot be split off exactly (see
`chunked_ce.split_output_head`) takes the plain path: full logits, then the
gather; same values, the plain path's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import mlx.core as mx
import numpy as np
from mlx import nn

from tunewire.trainer.worker.chunked_ce import OutputHead, split_output_head
from tunewire.trainer.worker.segment_mask import segment_caches

# Position counts are padded up to one of 32·2^k or 48·2^k: at most ~1.4 × the
# positions computed, two compiled shapes per octave.
MIN_BUCKET = 32


def bucket(count: int, limit: int) -> int:
    """The padded length for `count` positions, at most `limit` (all positions of the batch)."""
    size = MIN_BUCKET
    while size < count:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return max(1, min(size, limit))


class PositionArrays(NamedTuple):
    """`TrainedPositions` as device arrays, the form the compiled step takes."""

    index: mx.array  # (P,) int32: row * (length - 1) + position, into the flattened batch
    targets: mx.array  # (P,) int32: the token predicted there
    weight: mx.array  # (P,) float32: 1.0, or 0.0 on bucket padding
    row: mx.array  # (P,) int32: the batch row (for per-sequence sums)


@dataclass
class TrainedPositions:
    """Host-side list of the positions whose next token trains, padded to a bucket."""

    index: np.ndarray
    targets: np.ndarray
    weight: np.ndarray
    row: np.ndarray
    count: int  # real (unpadded) positions

    def arrays(self) -> PositionArrays:
        return PositionArrays(
            mx.array(self.index), mx.array(self.targets), mx.array(self.weight), mx.array(self.row)
        )


def trained_positions(tokens: np.ndarray, mask: np.ndarray) -> TrainedPositions:
    """Positions p (of tokens[:, :-1]) with mask[:, p + 1] set: their targets train."""
    rows, length = tokens.shape
    width = max(length - 1, 0)
    r, p = np.nonzero(mask[:, 1:] > 0)
    count = len(r)
    size = bucket(count, max(rows * width, 1)) if count else 1
    index = np.zeros(size, np.int32)
    targets = np.zeros(size, np.int32)
    weight = np.zeros(size, np.float32)
    row = np.zeros(size, np.int32)
    index[:count] = r * width + p
    targets[:count] = tokens[r, p + 1]
    weight[:count] = 1.0
    row[:count] = r
    return TrainedPositions(index, targets, weight, row, count)


_HEAD_ATTRIBUTE = "_tunewire_output_head"


def output_head(model: nn.Module) -> OutputHead | None:
    """The model's split head (None: the plain path), found once per model. Call it before
    tracing the step (`mx.compile`, `value_and_grad`): finding it evaluates a forward pass.
    Call it after the method's set-up: FULL trains the head, the adapter methods do not."""
    try:
        return object.__getattribute__(model, _HEAD_ATTRIBUTE)
    except AttributeError:
        head = split_output_head(model)
        object.__setattr__(model, _HEAD_ATTRIBUTE, head)
        return head


def token_nll(
    model: nn.Module,
    tokens: mx.array,
    positions: PositionArrays,
    segments: mx.array | None = None,
) -> mx.array:
    """(P,) float32: -log p(target) at each listed position (0 where the weight is 0).
    `segments`: a packed batch's record ids (rows, length); attention stays within each."""
    inputs = tokens[:, :-1]
    # Packed rows pass their mask as mlx-lm's cache (see segment_mask); else none at all.
    cache = {} if segments is None else {"cache": segment_caches(model, segments[:, :-1])}
    head = output_head(model)
    if head is None:
        logits = model(inputs, **cache)
        flat = logits.reshape(-1, logits.shape[-1])[positions.index]
        nll = nn.losses.cross_entropy(flat, positions.targets).astype(mx.float32)
    else:
        hidden = head.body(model, inputs, **cache)
        flat = hidden.reshape(-1, hidden.shape[-1])[positions.index]
        nll = head.nll(model, flat, positions.targets)
    return nll * positions.weight


def sequence_logprobs(model: nn.Module, tokens: mx.array, positions: PositionArrays) -> mx.array:
    """(rows,) float32: the summed log-probability of each row's trained tokens."""
    nll = token_nll(model, tokens, positions)
    return mx.zeros((tokens.shape[0],), mx.float32).at[positions.row].add(-nll)


def trained_loss(
    model: nn.Module,
    tokens: mx.array,
    positions: PositionArrays,
    normalizer: mx.array,
    segments: mx.array | None = None,
):
    """(loss to differentiate, summed cross-entropy over trained tokens): the SFT loss."""
    ce_sum = token_nll(model, tokens, positions, segments).sum()
    return ce_sum / normalizer, ce_sum
