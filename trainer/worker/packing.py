"""Packing: several records in one sequence of up to max_seq_length tokens, on the host.

With `hyperparameters.packing` the records are put into bins of at most
`max_seq_length` tokens, best fit in decreasing length (the longest record
left opens a bin, then the longest that still fits joins it, until none
does), once per job: the bins depend only on the data, so a checkpoint's data
position (epoch, index) still says where to continue. A bin is one row of a
batch and `batch_size` counts rows, so a packed epoch has fewer, fuller steps.

Each row carries segment ids (1, 2, ... per record, 0 on padding). The model
attends only within a segment (`segment_mask`, built from these ids); the
first token of every record is not a target, so no record's loss is a
prediction from the record before it. This module is numpy only.
"""

from __future__ import annotations

import bisect

import numpy as np

from tunewire.trainer.worker.data import (
    Batch,
    DataError,
    Record,
    TrainBatches,
    computed_positions,
    pad_length,
    sorted_groups,
)


def pack_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` in bins whose lengths sum to at most `capacity` (best fit
    decreasing; the same lengths give the same bins)."""
    left = sorted((n, i) for i, n in enumerate(lengths))
    bins = []
    while left:
        n, i = left.pop()
        chosen, space = [i], capacity - n
        while left and space > 0:
            # The longest record left that fits in the space (the last one not above it).
            k = bisect.bisect_right(left, (space, len(lengths))) - 1
            if k < 0:
                break
            n, i = left.pop(k)
            chosen.append(i)
            space -= n
        bins.append(sorted(chosen))
    return bins


def packed_lengths(records: list[Record], bins: list[list[int]]) -> list[int]:
    return [sum(len(records[i]) for i in b) for b in bins]


def collate_packed(
    records: list[Record],
    bins: list[list[int]],
    rank: int,
    world_size: int,
    max_seq_length: int,
) -> Batch:
    """The rank's rows (every world_size-th bin of the global batch `bins`), with segment ids."""
    mine = bins[rank::world_size]
    widths = packed_lengths(records, mine)
    length = pad_length(max(widths, default=1), max_seq_length)
    tokens = np.zeros((len(mine), length), np.int32)
    mask = np.zeros((len(mine), length), np.float32)
    segments = np.zeros((len(mine), length), np.int32)
    for row, members in enumerate(mine):
        start = 0
        for segment, i in enumerate(members, start=1):
            record = records[i]
            end = start + len(record)
            tokens[row, start:end] = record.tokens
            mask[row, start:end] = record.mask
            mask[row, start] = 0.0  # nothing in this record predicts its first token
            segments[row, start:end] = segment
            start = end
    members = [records[i] for b in bins for i in b]
    return Batch(
        tokens=tokens,
        mask=mask,
        global_trained=sum(r.trained_targets for r in members),
        global_tokens=sum(len(r) for r in members),
        global_computed=computed_positions(
            packed_lengths(records, bins), world_size, max_seq_length
        ),
        segments=segments,
    )


def packed_units(records: list[Record], max_seq_length: int, batch_size: int) -> list[list[int]]:
    """The job's bins; a DataError when they are fewer than one batch needs."""
    bins = pack_bins([len(r) for r in records], max_seq_length)
    if len(bins) < batch_size:
        raise DataError(
            f"with hyperparameters.packing the {len(records)} training records pack into "
            f"{len(bins)} sequences of at most {max_seq_length} tokens, but batch_size is "
            f"{batch_size} sequences: lower batch_size to at most {len(bins)} or turn packing off"
        )
    return bins


class PackedTrainBatches(TrainBatches):
    """`TrainBatches` whose rows are bins of records: the same resumable order, over bins."""

    def _groups(self, batch_size: int) -> list[list[int]]:
        self.bins = packed_units(self.dataset.records, self.max_seq_length, batch_size)
        return sorted_groups(packed_lengths(self.dataset.records, self.bins), batch_size)

    def _collate(self, group: list[int]) -> Batch:
        bins = [self.bins[i] for i in group]
        return collate_packed(
            self.dataset.records, bins, self.rank, self.world_size, self.max_seq_length
        )
