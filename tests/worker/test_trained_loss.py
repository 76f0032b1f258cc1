"""The loss at trained positions, a chunk of logits at a time, equals the plain loss (full
logits, cross-entropy times the mask) in value and in every gradient, for each method; and
the sequence log-probs preference losses use equal the plain per-row sums."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn

from tunewire.models import smollm2
from tunewire.trainer.worker.chunked_ce import split_output_head
from tunewire.trainer.worker.logprobs import bucket, output_head, trained_loss, trained_positions

from .conftest import subprocess_env
from .probe_trained_loss import chat_like_batch, load, plain_loss, report, with_chunk_rows

pytestmark = pytest.mark.timeout(300)

REL = 1e-5
PROBE = Path(__file__).with_name("probe_trained_loss.py")


def assert_equal_paths(result: dict, rel: float = REL) -> None:
    assert result["loss_rel"] <= rel, result["loss_rel"]
    assert result["grad_names"] and result["grads_rel"]
    worst = {name: r for name, r in result["grads_rel"].items() if r is None or r > rel}
    assert not worst, worst  # None: a gradient that is all zeros on the plain path
    assert result["rows_rel"] <= rel, result["rows_rel"]


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_chunked_loss_and_gradients_equal_the_plain_path_on_the_tiny_model(tiny_model_dir, method):
    model = load(tiny_model_dir, method)
    head = output_head(model)
    assert head is not None and head.tied is False
    assert head.trainable == (["weight"] if method == "full" else [])
    with_chunk_rows(model, 16)
    tokens, mask = chat_like_batch(model.args.vocab_size)
    assert_equal_paths(report(model, tokens, mask))


def test_all_token_data_and_a_single_trained_token(tiny_model_dir):
    model = load(tiny_model_dir, "lora")
    with_chunk_rows(model, 24)
    tokens, _ = chat_like_batch(model.args.vocab_size, seed=1)
    everything = (tokens > 0).astype(np.float32)
    everything[:, 0] = 0
    assert_equal_paths(report(model, tokens, everything))
    one = np.zeros_like(everything)
    one[2, 10] = 1.0
    assert_equal_paths(report(model, tokens, one))


def test_positions_are_bucketed_so_few_shapes_compile():
    sizes = {bucket(n, 10_000) for n in range(1, 5000)}
    assert sorted(sizes)[:6] == [32, 48, 64, 96, 128, 192]
    assert len(sizes) <= 16
    assert all(bucket(n, 10_000) >= n for n in range(1, 5000))
    assert bucket(900, 400) == 400  # never more than the batch's positions
    tokens = np.arange(1, 21, dtype=np.int32).reshape(2, 10)
    mask = np.zeros((2, 10), np.float32)
    mask[0, 3:6] = 1
    mask[1, 9] = 1
    positions = trained_positions(tokens, mask)
    assert positions.count == 4 and len(positions.index) == 18  # min(32, 2 rows × 9)
    assert positions.index[:4].tolist() == [2, 3, 4, 9 + 8]
    assert positions.targets[:4].tolist() == [4, 5, 6, 20]
    assert positions.weight.sum() == 4 and positions.row[:4].tolist() == [0, 0, 0, 1]


def test_a_model_with_something_after_its_head_takes_the_plain_path(tiny_model_dir):
    model = load(tiny_model_dir, "lora")

    class SoftCapped(type(model)):
        def __call__(self, inputs, cache=None, input_embeddings=None):
            return 30.0 * mx.tanh(super().__call__(inputs, cache, input_embeddings) / 30.0)

    model.__class__ = SoftCapped
    assert split_output_head(model) is None
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=2)
    assert_equal_paths(report(model, tokens, mask))


def test_the_compiled_step_takes_the_chunked_loss(tiny_model_dir):
    model = load(tiny_model_dir, "lora")
    with_chunk_rows(model, 16)
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=3)
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    loss_and_grad = nn.value_and_grad(model, trained_loss)
    state = [model.state]

    # As the worker's step: the model captured (its state an input), not an argument.
    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, positions, normalizer):
        return loss_and_grad(model, tokens, positions, normalizer)

    (got, _), _ = step(mx.array(tokens), positions.arrays(), normalizer)
    (want, _), _ = nn.value_and_grad(model, plain_loss)(
        model, mx.array(tokens), mx.array(mask), normalizer
    )
    assert abs(got.item() - want.item()) <= REL * abs(want.item())


def probe(model_dir: Path, method: str, rows: int, length: int) -> dict:
    """The comparison on a real model, in a worker-like process (OpenBLAS preloaded)."""
    argv = [sys.executable, str(PROBE), str(model_dir), method, str(rows), str(length)]
    done = subprocess.run(argv, capture_output=True, text=True, env=subprocess_env(), timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.real_model
@pytest.mark.parametrize("method", ["lora", "full"])
def test_chunked_loss_equals_the_plain_path_on_smollm2(method):
    out = probe(smollm2.ensure_smollm2(dtype="float32", log=lambda _: None), method, 2, 129)
    head = out["head"]
    # SmolLM2 ties its head to the embedding; 49k tokens: 168 rows a chunk, two chunks here.
    assert head["tied"] and head["rows"] == 168
    assert head["trainable"] == (["weight"] if method == "full" else [])
    assert_equal_paths(out["report"])
    if method == "lora":
        # The plain path holds float32 logits of every position (2 × 128 × 49,152 × 4 B =
        # 50 MB a copy, several copies); the chunked path holds one chunk's.
        peaks = out["peaks"]
        assert peaks["chunked"] < peaks["plain"] - 2 * 128 * 49_152 * 4, peaks


@pytest.mark.real_model
def test_chunked_loss_on_smollm2s_quantized_head_equals_the_plain_path():
    # mlx's CPU quantized matmul is slow: a short batch.
    out = probe(smollm2.ensure_smollm2(log=lambda _: None), "qlora", 1, 49)
    assert out["head"]["tied"] and out["head"]["trainable"] == []
    assert_equal_paths(out["report"], rel=1e-4)


def _head_grads(linear: bool, bias: bool, n: int = 2048, vocab: int = 8192, dim: int = 256):
    """Loss and head gradients of a trainable linear head, a chunk of 64 rows at a time,
    and the peak memory the compiled gradient took over what existed before it."""
    from tunewire.trainer.worker.chunked_ce import make_chunked_nll

    mx.random.seed(3)
    params = [mx.random.normal((vocab, dim)) * 0.02]
    if bias:
        params.append(mx.random.normal((vocab,)) * 0.1)
    hidden, targets = mx.random.normal((n, dim)), mx.random.randint(0, vocab, (n,))
    mx.eval(params, hidden, targets)

    def head(p, h):
        return h @ p[0].T + p[1] if len(p) > 1 else h @ p[0].T

    nll = make_chunked_nll(head, 64, linear=linear)
    grad = mx.compile(mx.value_and_grad(lambda p, h: nll(h, targets, p).mean(), argnums=(0, 1)))
    mx.synchronize()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    loss, (d_params, d_hidden) = grad(params, hidden)
    mx.eval(loss, d_params, d_hidden)
    return loss, d_params, d_hidden, mx.get_peak_memory() - base, params[0].nbytes


@pytest.mark.parametrize("bias", [False, True])
def test_a_trainable_heads_gradient_is_accumulated_in_one_buffer(bias):
    """The linear head's explicit backward (one `addmm` accumulator) equals the generic
    vjp path, and its memory does not grow by a vocab x hidden gradient per chunk."""
    want_loss, want_params, want_hidden, generic_peak, weight_bytes = _head_grads(False, bias)
    loss, d_params, d_hidden, peak, _ = _head_grads(True, bias)
    assert abs(loss.item() - want_loss.item()) <= REL * abs(want_loss.item())
    for got, want in zip([*d_params, d_hidden], [*want_params, want_hidden]):
        rel = (mx.abs(got - want).max() / mx.abs(want).max()).item()
        assert rel <= REL, rel
    chunks = 2048 // 64
    # What remains per chunk is its (rows x vocab) logits gradient, not a weight gradient.
    assert peak < chunks * weight_bytes / 2, (peak, weight_bytes)
    assert peak < generic_peak / 2, (peak, generic_peak)
