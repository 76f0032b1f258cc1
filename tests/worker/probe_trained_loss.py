"""The plain loss and the chunked loss at trained positions, side by side: what
test_trained_loss.py compares. Run as a script (with the worker's environment, so
OpenBLAS carries SmolLM2's matmuls) it prints one JSON report:

    python probe_trained_loss.py MODEL_DIR METHOD ROWS LENGTH [CHUNK_ROWS]
    python probe_trained_loss.py MODEL_DIR qlora-cpu ROWS LENGTH   # kernel vs dequantized
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model

from tunewire.trainer.worker import logprobs
from tunewire.trainer.worker.logprobs import (
    output_head,
    sequence_logprobs,
    trained_loss,
    trained_positions,
)


def plain_loss(model, tokens, mask, normalizer):
    """The stock step's loss: every position projected, cross-entropy masked afterwards."""
    logits = model(tokens[:, :-1])
    ce = nn.losses.cross_entropy(logits, tokens[:, 1:]) * mask[:, 1:]
    ce_sum = ce.astype(mx.float32).sum()
    return ce_sum / normalizer, ce_sum


def chat_like_batch(vocab: int, rows: int = 4, length: int = 97, seed: int = 0):
    """Rows of different lengths (zero padded), a prompt untrained, the answer trained."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), np.float32)
    for r in range(rows):
        n = int(rng.integers(length // 2, length + 1))
        prompt = int(rng.integers(1, n - 1))
        tokens[r, :n] = rng.integers(1, vocab, n)
        mask[r, prompt:n] = 1.0
    return tokens, mask


def _perturb_lora_b(_name, module):
    if hasattr(module, "lora_b"):
        module.lora_b = mx.random.normal(module.lora_b.shape) * 0.01


def load(path: Path, method: str) -> nn.Module:
    """The model as the worker trains it with `method` (qlora: the quantized model as is)."""
    model, _ = load_model(Path(path))
    model.set_dtype(mx.float32)  # as the worker on a CPU (scales and biases of quantized layers)
    mx.random.seed(0)
    if method == "full":
        model.unfreeze()
    else:
        model.freeze()
        params = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": None}
        linear_to_lora_layers(model, len(model.layers), params, use_dora=method == "dora")
        # Adapters start with B = 0; make them matter, so every gradient is non-zero.
        model.apply_to_modules(_perturb_lora_b)
    model.train()
    mx.eval(model.parameters())
    return model


def with_chunk_rows(model: nn.Module, rows: int) -> None:
    """Force small chunks, so a small vocabulary still runs through many of them."""
    head = output_head(model)
    assert head is not None
    object.__setattr__(model, logprobs._HEAD_ATTRIBUTE, dataclasses.replace(head, rows=rows))


def report(model: nn.Module, tokens: np.ndarray, mask: np.ndarray) -> dict:
    """Relative differences of loss, each gradient and per-row log-probs (plain vs chunked)."""
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    t, m = mx.array(tokens), mx.array(mask)
    (want, _), want_grads = nn.value_and_grad(model, plain_loss)(model, t, m, normalizer)
    # Evaluated at once: read one by one, each gradient would rerun the backward pass.
    mx.eval(want, want_grads)
    (got, _), got_grads = nn.value_and_grad(model, trained_loss)(
        model, t, positions.arrays(), normalizer
    )
    mx.eval(got, got_grads)
    want_flat, got_flat = dict(tree_flatten(want_grads)), dict(tree_flatten(got_grads))
    grads = {}
    for name, w in want_flat.items():
        scale = mx.abs(w).max().item()
        grads[name] = mx.abs(got_flat[name] - w).max().item() / scale if scale else None
    logits = model(t[:, :-1])
    ce = nn.losses.cross_entropy(logits, t[:, 1:]) * m[:, 1:]
    want_rows = -ce.astype(mx.float32).sum(axis=1)
    got_rows = sequence_logprobs(model, t, positions.arrays())
    rows_rel = (mx.abs(got_rows - want_rows).max() / mx.abs(want_rows).max()).item()
    return {
        "loss": want.item(),
        "loss_rel": abs(got.item() - want.item()) / abs(want.item()),
        "grad_names": sorted(want_flat) == sorted(got_flat),
        "grads_rel": grads,
        "rows_rel": rows_rel,
    }


def peaks(model: nn.Module, tokens: np.ndarray, mask: np.ndarray) -> dict:
    """Peak MLX memory of one loss-and-gradient evaluation, plain and chunked."""
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    t = mx.array(tokens)

    def peak(fn, arg) -> int:
        mx.clear_cache()
        mx.reset_peak_memory()
        mx.eval(nn.value_and_grad(model, fn)(model, t, arg, normalizer))
        return int(mx.get_peak_memory())

    return {
        "plain": peak(plain_loss, mx.array(mask)),
        "chunked": peak(trained_loss, positions.arrays()),
    }


def dequantized_vs_native(model_dir: Path, rows: int, length: int) -> dict:
    """QLoRA's loss and adapter gradients with mlx's quantized kernel, then with the CPU's
    dequantize-then-matmul layers (`cpu_quantized`), on the same batch."""
    from tunewire.trainer.worker.cpu_quantized import use_dequantized_matmul

    results = []
    for swap in (False, True):
        model = load(model_dir, "qlora")
        changed = use_dequantized_matmul(model, mx.cpu) if swap else 0
        tokens, mask = chat_like_batch(model.args.vocab_size, rows, length, seed=4)
        positions = trained_positions(tokens, mask)
        normalizer = mx.array(float(positions.count))
        (loss, _), grads = nn.value_and_grad(model, trained_loss)(
            model, mx.array(tokens), positions.arrays(), normalizer
        )
        mx.eval(loss, grads)
        results.append((changed, loss.item(), dict(tree_flatten(grads))))
    (_, want_loss, want), (changed, got_loss, got) = results
    grads = {}
    for name, w in want.items():
        scale = mx.abs(w).max().item()
        grads[name] = mx.abs(got[name] - w).max().item() / scale if scale else None
    return {
        "changed": changed,
        "loss": want_loss,
        "loss_rel": abs(got_loss - want_loss) / abs(want_loss),
        "grads_rel": grads,
    }


def main() -> None:
    model_dir, method, rows, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if method == "qlora-cpu":
        print(json.dumps(dequantized_vs_native(Path(model_dir), rows, length)))
        return
    model = load(Path(model_dir), method)
    head = output_head(model)
    if len(sys.argv) > 5:
        with_chunk_rows(model, int(sys.argv[5]))
        head = output_head(model)
    tokens, mask = chat_like_batch(model.args.vocab_size, rows, length, seed=4)
    out = {
        "head": None if head is None else dataclasses.asdict(head),
        "report": report(model, tokens, mask),
        "peaks": peaks(model, tokens, mask) if method == "lora" else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
