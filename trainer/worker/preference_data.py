"""Preference pairs for the worker: each pair's two token sequences, reference log-probs, batches.

A canonical pair (prompt + chosen as its messages, `rejected` beside them) is
tokenized once into its two sequences (`tunewire.datasets.api.pair_tokens`:
only reply tokens trained, an over-long pair cut from the prompt's start).
Batches are the supervised ones' (`data.TrainBatches`: length-sorted groups,
an order from (seed, epoch), resumable by position), with a pair's length the
longer of its sides; a batch of B pairs is 2B rows, chosen rows first. numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewire.datasets.api import is_pair, pair_tokens
from tunewire.trainer.worker.data import DataError, TrainBatches, pad_length


@dataclass
class PairRecord:
    chosen: np.ndarray  # int32 token ids
    chosen_mask: np.ndarray  # bool, True on the chosen reply
    rejected: np.ndarray
    rejected_mask: np.ndarray
    line: int
    # Reference log-probabilities of (chosen, rejected), filled in before training.
    reference: tuple[float, float] = (0.0, 0.0)

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    @property
    def tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)


@dataclass
class PairDataset:
    records: list[PairRecord]
    truncated: int  # pairs whose prompt lost its first tokens to fit max_seq_length
    dropped: int  # pairs left out: a reply alone does not fit

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def load_pairs(path: str | Path, tokenizer, max_seq_length: int) -> PairDataset:
    """Reads canonical JSONL pairs and tokenizes both sides of each."""
    records, truncated, dropped = [], 0, 0
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
                pair = is_pair(item) and item["messages"]
            except (ValueError, KeyError, TypeError):
                pair = None
            line = item.get("line", number) if isinstance(item, dict) else number
            if not pair:
                raise DataError(
                    f"{path}: record of line {line} is not a preference pair "
                    "(DPO and ORPO train on prompt/chosen/rejected data)"
                )
            try:
                tokens = pair_tokens(tokenizer, item, max_seq_length)
            except Exception as exc:
                raise DataError(
                    f"{path}: record of line {line}: the chat template failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            if tokens is None:
                dropped += 1
                continue
            truncated += tokens.dropped > 0
            records.append(
                PairRecord(
                    np.asarray(tokens.chosen, np.int32),
                    np.asarray(tokens.chosen_mask, bool),
                    np.asarray(tokens.rejected, np.int32),
                    np.asarray(tokens.rejected_mask, bool),
                    line,
                )
            )
    return PairDataset(records, truncated, dropped)


@dataclass
class PairBatch:
    """One rank's pairs of a global batch: 2B rows (chosen first), their reference log-probs."""

    tokens: np.ndarray  # (2B, length) int32
    mask: np.ndarray  # (2B, length) float32, 1.0 on reply tokens
    reference: np.ndarray  # (B, 2) float32: chosen, rejected
    global_pairs: int  # pairs in the global batch (all ranks)
    global_tokens: int  # non-padding tokens in it, both sides


def collate_pairs(
    records: list[PairRecord], indices: list[int], rank: int, world_size: int, max_seq_length: int
) -> PairBatch:
    chosen = [records[i] for i in indices]
    mine = chosen[rank::world_size]
    length = pad_length(max((len(r) for r in mine), default=1), max_seq_length)
    rows = len(mine)
    tokens = np.zeros((2 * rows, length), np.int32)
    mask = np.zeros((2 * rows, length), np.float32)
    for row, record in enumerate(mine):
        tokens[row, : len(record.chosen)] = record.chosen
        mask[row, : len(record.chosen)] = record.chosen_mask
        tokens[rows + row, : len(record.rejected)] = record.rejected
        mask[rows + row, : len(record.rejected)] = record.rejected_mask
    mask[:, 0] = 0.0
    reference = np.array([r.reference for r in mine], np.float32).reshape(rows, 2)
    return PairBatch(tokens, mask, reference, len(chosen), sum(r.tokens for r in chosen))


class PairBatches(TrainBatches):
    """TrainBatches over pairs: the same order and position, pair batches out."""

    def next(self) -> PairBatch:  # type: ignore[override]
        pos = self.position
        group = self.groups[self.epoch_order(pos.epoch)[pos.index]]
        pos.index += 1
        if pos.index == len(self.groups):
            pos.epoch, pos.index = pos.epoch + 1, 0
        return collate_pairs(
            self.dataset.records, group, self.rank, self.world_size, self.max_seq_length
        )


def pair_groups(dataset: PairDataset, batch_size: int, max_batches: int = 0) -> list[list[int]]:
    """Length-sorted groups in a fixed order, the last short one kept (validation, reference)."""
    order = sorted(range(len(dataset.records)), key=lambda i: len(dataset.records[i]))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return groups[:max_batches] if max_batches > 0 else groups


def validation_pair_batches(
    dataset: PairDataset,
    batch_size: int,
    max_batches: int,
    max_seq_length: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[PairBatch]:
    return [
        collate_pairs(dataset.records, g, rank, world_size, max_seq_length)
        for g in pair_groups(dataset, batch_size, max_batches)
    ]
