"""Training data for the worker: tokenized records with per-token loss masks, and batches.

Records come from the canonical JSONL the dataset service writes, one
conversation per line. Each is rendered with the model's chat template and
tokenized once; a mask marks the tokens the loss trains on (every assistant
turn, the last one, or all tokens). Batches follow mlx-lm's
`iterate_batches`: records sorted by length, cut into fixed groups of
`batch_size` (the remainder dropped), the groups visited in a permutation per
epoch. Our permutation comes from (seed, epoch) alone, so a data position
(epoch, index) is all a checkpoint needs to continue exactly where it stopped.
This module is numpy only; the training loop turns batches into mx arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewire.datasets.api import trained_token_mask

# Pad a batch to one plus a multiple of this, as mlx-lm does: few distinct
# shapes, so the compiled step is rarely retraced.
PAD_MULTIPLE = 32


class DataError(ValueError):
    """Training data the worker cannot use; the message names the file and line."""


@dataclass
class Record:
    tokens: np.ndarray  # int32 token ids, truncated to max_seq_length
    mask: np.ndarray  # bool, True where the token is a trained target
    line: int  # line in the source file, for error messages

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def trained_targets(self) -> int:
        # The first token is never a target: nothing predicts it.
        return int(self.mask[1:].sum())


@dataclass
class Dataset:
    records: list[Record]
    truncated: int  # records cut to max_seq_length
    untrained: int  # records left with no trained token (after truncation)

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def load_dataset(path: str | Path, tokenizer, masking: str, max_seq_length: int) -> Dataset:
    """Reads canonical JSONL and tokenizes every record with its loss mask."""
    records, truncated, untrained = [], 0, 0
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
                messages = item["messages"]
            except (ValueError, KeyError, TypeError):
                raise DataError(
                    f"{path}:{number}: not a canonical record (needs 'messages')"
                ) from None
            line = item.get("line", number)
            try:
                tokens, mask = trained_token_mask(
                    tokenizer, messages, masking, tools=item.get("tools")
                )
            except Exception as exc:
                raise DataError(
                    f"{path}: record of line {line}: the chat template failed: {type(exc).__name__}: {exc}"
                ) from None
            tokens = np.asarray(tokens, dtype=np.int32)
            mask = np.asarray(mask, dtype=bool)
            if len(tokens) > max_seq_length:
                truncated += 1
                tokens, mask = tokens[:max_seq_length], mask[:max_seq_length]
            record = Record(tokens, mask, line)
            if record.trained_targets == 0:
                untrained += 1
            records.append(record)
    return Dataset(records, truncated, untrained)


@dataclass
class Batch:
    """One rank's share of a global batch, with the global counts every rank needs."""

    tokens: np.ndarray  # (rows, length) int32, zero padded
    mask: np.ndarray  # (rows, length) float32, 1.0 where the token is a trained target
    global_trained: int  # trained targets in the whole global batch (all ranks)
    global_tokens: int  # non-padding tokens in the whole global batch (all ranks)
    global_computed: int = 0  # positions the model computes (rows x padded length, all ranks)
    # Packed rows only (`packing`): (rows, length) int32, the record of each token
    # (1, 2, ...; 0 on padding); attention stays within a record. None: one record a row.
    segments: np.ndarray | None = None


def pad_length(longest: int, max_seq_length: int) -> int:
    return min(1 + PAD_MULTIPLE * ((longest + PAD_MULTIPLE - 1) // PAD_MULTIPLE), max_seq_length)


def collate(
    records: list[Record], indices: list[int], rank: int, world_size: int, max_seq_length: int
) -> Batch:
    """The rank's rows of the global batch `indices` (every world_size-th, like mlx-lm)."""
    chosen = [records[i] for i in indices]
    mine = chosen[rank::world_size]
    length = pad_length(max((len(r) for r in mine), default=1), max_seq_length)
    tokens = np.zeros((len(mine), length), np.int32)
    mask = np.zeros((len(mine), length), np.float32)
    for row, record in enumerate(mine):
        tokens[row, : len(record)] = record.tokens
        mask[row, : len(record)] = record.mask
    mask[:, 0] = 0.0
    return Batch(
        tokens=tokens,
        mask=mask,
        global_trained=sum(r.trained_targets for r in chosen),
        global_tokens=sum(len(r) for r in chosen),
        global_computed=computed_positions([len(r) for r in chosen], world_size, max_seq_length),
    )


def computed_positions(row_lengths: list[int], world_size: int, max_seq_length: int) -> int:
    """Positions the model computes for a global batch of rows of these lengths: each
    rank pads its rows (every world_size-th) to its own longest."""
    computed = 0
    for k in range(world_size):
        rows = row_lengths[k::world_size]
        if rows:
            computed += len(rows) * (pad_length(max(rows), max_seq_length) - 1)
    return computed


def sorted_groups(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into full groups of batch_size."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


@dataclass
class Position:
    """Where the next micro-batch comes from: epoch and index in that epoch's order."""

    epoch: int = 0
    index: int = 0


class TrainBatches:
    """Deterministic, resumable micro-batches: the order depends only on (seed, epoch)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        max_seq_length: int,
        rank: int = 0,
        world_size: int = 1,
        position: Position | None = None,
    ):
        self.dataset = dataset
        self.seed = seed
        self.max_seq_length = max_seq_length
        self.rank, self.world_size = rank, world_size
        self.groups = self._groups(batch_size)
        if not self.groups:
            raise DataError(
                f"the training data has {len(dataset)} records but batch_size is {batch_size}: "
                f"it needs at least {batch_size}"
            )
        self.position = position or Position()
        self._order_epoch, self._order = -1, None

    def _groups(self, batch_size: int) -> list[list[int]]:
        return sorted_groups([len(r) for r in self.dataset.records], batch_size)

    def _collate(self, group: list[int]) -> Batch:
        return collate(self.dataset.records, group, self.rank, self.world_size, self.max_seq_length)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.groups)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order, self._order_epoch = rng.permutation(len(self.groups)), epoch
        return self._order

    @property
    def epoch_progress(self) -> float:
        """Epochs completed, fractional, at the current position."""
        return self.position.epoch + self.position.index / len(self.groups)

    def next(self) -> Batch:
        pos = self.position
        group = self.groups[self.epoch_order(pos.epoch)[pos.index]]
        pos.index += 1
        if pos.index == len(self.groups):
            pos.epoch, pos.index = pos.epoch + 1, 0
        return self._collate(group)


def validation_batches(
    dataset: Dataset,
    batch_size: int,
    max_batches: int,
    max_seq_length: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[Batch]:
    """Length-sorted batches in a fixed order; unlike training the last, short one is kept."""
    order = sorted(range(len(dataset.records)), key=lambda i: len(dataset.records[i]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if max_batches > 0:
        groups = groups[:max_batches]
    return [collate(dataset.records, g, rank, world_size, max_seq_length) for g in groups]
