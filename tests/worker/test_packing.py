"""Packing: records packed into one row train exactly as they do one per row (loss and every
gradient), no token attends across records, and the bins are full and deterministic."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.data import DataError, Dataset, Record, collate
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.logprobs import token_nll, trained_loss, trained_positions
from tunewire.trainer.worker.packing import (
    PackedTrainBatches,
    collate_packed,
    pack_bins,
    packed_lengths,
)
from tunewire.trainer.worker.segment_mask import check_packing, segment_mask

from .probe_trained_loss import load

pytestmark = pytest.mark.timeout(300)

REL = 1e-5


def chat_records(vocab: int, count: int = 7, seed: int = 0) -> list[Record]:
    """Records of different lengths, each a prompt (untrained) then an answer (trained)."""
    rng = np.random.default_rng(seed)
    records = []
    for line in range(count):
        n = int(rng.integers(6, 40))
        prompt = int(rng.integers(1, n - 1))
        mask = np.zeros(n, bool)
        mask[prompt:] = True
        records.append(Record(rng.integers(1, vocab, n).astype(np.int32), mask, line + 1))
    return records


def loss_and_grads(model, batch):
    positions = trained_positions(batch.tokens, batch.mask)
    segments = None if batch.segments is None else mx.array(batch.segments)
    normalizer = mx.array(float(batch.global_trained))
    (loss, _), grads = nn.value_and_grad(model, trained_loss)(
        model, mx.array(batch.tokens), positions.arrays(), normalizer, segments
    )
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


def assert_same_training(model, unpacked, packed, rel=REL):
    want_loss, want = loss_and_grads(model, unpacked)
    got_loss, got = loss_and_grads(model, packed)
    assert abs(got_loss - want_loss) <= rel * abs(want_loss), (got_loss, want_loss)
    assert want and sorted(want) == sorted(got)
    worst = {}
    for name, w in want.items():
        scale = mx.abs(w).max().item()
        assert scale > 0, name
        worst[name] = mx.abs(got[name] - w).max().item() / scale
    assert max(worst.values()) <= rel, worst


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_packed_loss_and_gradients_equal_one_record_a_row(tiny_model_dir, method):
    model = load(tiny_model_dir, method)
    records = chat_records(model.args.vocab_size)
    indices = list(range(len(records)))
    bins = pack_bins([len(r) for r in records], 64)
    assert len(bins) < len(records)  # something was packed together
    unpacked = collate(records, indices, 0, 1, 64)
    packed = collate_packed(records, bins, 0, 1, 64)
    assert packed.global_trained == unpacked.global_trained
    assert packed.tokens.shape[0] == len(bins) and packed.mask.sum() == unpacked.mask.sum()
    assert packed.global_computed < unpacked.global_computed
    assert_same_training(model, unpacked, packed)


def test_no_token_attends_across_records(tiny_model_dir):
    """Changing record A's tokens leaves the packed record B's log-likelihoods as they were."""
    model = load(tiny_model_dir, "lora")
    model.eval()
    vocab = model.args.vocab_size
    records = chat_records(vocab, count=3, seed=3)
    batch = collate_packed(records, [[0, 1, 2]], 0, 1, 128)
    everything = (batch.segments > 0).astype(np.float32)
    positions = trained_positions(batch.tokens, everything)
    segments = mx.array(batch.segments)

    def nll(tokens):
        values = token_nll(model, mx.array(tokens), positions.arrays(), segments)
        return np.array(values)[: positions.count]

    before = nll(batch.tokens)
    changed = batch.tokens.copy()
    first = batch.segments[0] == 2
    changed[0, first] = (changed[0, first] + 17) % (vocab - 1) + 1
    after = nll(changed)
    # What position p outputs is the record of token p's: only record 2's may change.
    # (Its last position predicts record 3's first token, never a target in training.)
    segment = batch.segments[0, :-1][positions.index[: positions.count]]
    np.testing.assert_array_equal(after[segment != 2], before[segment != 2])
    assert not np.allclose(after[segment == 2], before[segment == 2])


def test_the_mask_is_causal_within_each_segment():
    mask = np.array(segment_mask(mx.array([[1, 1, 2, 2, 2, 0]])))[0, 0]
    want = np.array(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, want)


def test_bins_are_full_deterministic_and_hold_every_record_once():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 300, 500)]
    bins = pack_bins(lengths, 512)
    assert bins == pack_bins(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(500))
    sums = [sum(lengths[i] for i in b) for b in bins]
    assert max(sums) <= 512
    assert sum(lengths) / (512 * len(bins)) > 0.95  # nearly no padding left
    assert sorted(pack_bins([512, 512, 3], 512)) == [[0], [1], [2]]  # a full record fills a bin


def test_packed_batches_resume_and_refuse_too_few_sequences():
    records = chat_records(1000, count=20, seed=1)
    data = Dataset(records, 0, 0)
    a = PackedTrainBatches(data, 2, 0, 64)
    lengths = packed_lengths(records, a.bins)
    assert a.batches_per_epoch == len(a.bins) // 2 and max(lengths) <= 64
    seen = [a.next().tokens.tolist() for _ in range(5)]
    b = PackedTrainBatches(data, 2, 0, 64)
    for _ in range(3):
        b.next()
    resumed = PackedTrainBatches(data, 2, 0, 64, position=b.position)
    assert [resumed.next().tokens.tolist() for _ in range(2)] == seen[3:]
    with pytest.raises(DataError, match=r"hyperparameters\.packing .* pack into \d+ sequences"):
        PackedTrainBatches(data, 200, 0, 64)


def test_a_model_that_ignores_the_mask_is_refused(tiny_model_dir):
    model = load(tiny_model_dir, "lora")
    check_packing(model)  # the tiny Llama takes it

    class Unmasked(type(model)):
        def __call__(self, inputs, cache=None, input_embeddings=None):
            return super().__call__(inputs)

    model.__class__ = Unmasked
    with pytest.raises(WorkerError, match=r"hyperparameters\.packing is not supported"):
        check_packing(model)
