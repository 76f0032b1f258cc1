"""The worker's data path: per-token loss masks, truncation, and resumable deterministic batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlx_lm.utils import load_tokenizer

from tunewire.trainer.worker.data import DataError, Position, TrainBatches, collate, load_dataset

pytestmark = pytest.mark.timeout(60)

TWO_TURNS = {
    "messages": [
        {"role": "system", "content": "Be brief.", "trainable": False},
        {"role": "user", "content": "Hi there", "trainable": False},
        {"role": "assistant", "content": "Hello!", "trainable": True},
        {"role": "user", "content": "Name a color", "trainable": False},
        {"role": "assistant", "content": "Blue.", "trainable": True},
    ],
    "line": 7,
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def trained_labels(tokenizer, path, mode) -> str:
    """The target tokens the loss trains on, as the loop sees them (inputs shifted by one)."""
    dataset = load_dataset(path, tokenizer, mode, max_seq_length=512)
    batch = collate(dataset.records, [0], rank=0, world_size=1, max_seq_length=512)
    targets, weights = batch.tokens[0, 1:], batch.mask[0, 1:]
    assert batch.global_trained == int(weights.sum())
    return tokenizer.decode([int(t) for t, w in zip(targets, weights) if w])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all_assistant", "Hello!<|im_end|>\nBlue.<|im_end|>\n"),
        ("last_assistant", "Blue.<|im_end|>\n"),
        # Everything but the first token, which nothing predicts.
        (
            "all",
            (
                "system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color"
                "<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
            ),
        ),
    ],
)
def test_multi_turn_labels_trained_per_masking_mode(tokenizer, tmp_path, mode, expected):
    path = tmp_path / "two_turns.jsonl"
    path.write_text(json.dumps(TWO_TURNS) + "\n")
    assert trained_labels(tokenizer, path, mode) == expected


def test_long_records_are_truncated_and_counted(tokenizer, tmp_path):
    path = tmp_path / "long.jsonl"
    long = dict(
        TWO_TURNS,
        messages=[
            {"role": "user", "content": "word " * 200, "trainable": False},
            {"role": "assistant", "content": "ok", "trainable": True},
        ],
    )
    path.write_text(json.dumps(TWO_TURNS) + "\n" + json.dumps(long) + "\n")
    dataset = load_dataset(path, tokenizer, "all_assistant", max_seq_length=60)
    assert dataset.truncated == 1  # the two-turn record (54 tokens) fits
    assert [len(r) for r in dataset.records] == [54, 60]
    # The long record's answer was cut off: it trains on nothing now.
    assert dataset.untrained == 1


def test_a_line_that_is_not_a_record_is_named(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(TWO_TURNS) + '\n{"text": "no messages"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        load_dataset(path, tokenizer, "all_assistant", max_seq_length=64)


@pytest.fixture(scope="module")
def dataset(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "train.jsonl"
    records = []
    for i in range(10):
        answer = "yes " * (i + 1)
        records.append(
            {
                "messages": [
                    {"role": "user", "content": f"q{i}", "trainable": False},
                    {"role": "assistant", "content": answer, "trainable": True},
                ]
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return load_dataset(path, tokenizer, "all_assistant", max_seq_length=64)


def take(batches: TrainBatches, n: int) -> list[bytes]:
    return [batches.next().tokens.tobytes() for _ in range(n)]


def test_batches_are_length_sorted_groups_in_a_seeded_order_per_epoch(dataset):
    batches = TrainBatches(dataset, batch_size=3, seed=1, max_seq_length=64)
    assert batches.batches_per_epoch == 3  # 10 records: the remainder of 1 is dropped
    epoch0 = take(batches, 3)
    assert len(set(epoch0)) == 3
    assert batches.position == Position(1, 0)
    epoch1 = take(batches, 3)
    assert sorted(epoch0) == sorted(epoch1)  # every group once per epoch
    again = TrainBatches(dataset, batch_size=3, seed=1, max_seq_length=64)
    assert take(again, 6) == epoch0 + epoch1
    other_seed = TrainBatches(dataset, batch_size=3, seed=2, max_seq_length=64)
    orders = {tuple(take(other_seed, 3)) for _ in range(3)}
    assert any(order != tuple(epoch0) for order in orders)


def test_a_restored_position_continues_exactly(dataset):
    straight = TrainBatches(dataset, batch_size=2, seed=5, max_seq_length=64)
    expected = take(straight, 12)
    first = TrainBatches(dataset, batch_size=2, seed=5, max_seq_length=64)
    take(first, 7)
    resumed = TrainBatches(
        dataset,
        batch_size=2,
        seed=5,
        max_seq_length=64,
        position=Position(first.position.epoch, first.position.index),
    )
    assert take(resumed, 5) == expected[7:]


def test_ranks_split_each_global_batch_and_share_its_counts(dataset):
    whole = TrainBatches(dataset, batch_size=4, seed=0, max_seq_length=64).next()
    halves = [
        TrainBatches(dataset, batch_size=4, seed=0, max_seq_length=64, rank=r, world_size=2).next()
        for r in (0, 1)
    ]

    def rows(b):
        return {
            b.tokens[i][: int((b.tokens[i] != 0).sum())].tobytes() for i in range(len(b.tokens))
        }

    assert rows(halves[0]) | rows(halves[1]) == rows(whole)
    assert all(len(h.tokens) == 2 for h in halves)
    assert all(h.global_trained == whole.global_trained for h in halves)
    assert all(h.global_tokens == whole.global_tokens for h in halves)
    assert np.isclose(halves[0].mask.sum() + halves[1].mask.sum(), whole.mask.sum())


def test_too_few_records_for_a_batch_is_an_error_naming_both(dataset):
    with pytest.raises(DataError, match="10 records but batch_size is 16"):
        TrainBatches(dataset, batch_size=16, seed=0, max_seq_length=64)
