"""QLoRA on the CPU multiplies by dequantized weights: same loss and adapter gradients as
mlx's quantized kernel (within float tolerance), the quantized weights kept as they are,
only one layer's float weight alive at a time, and a QLoRA job's worker says it does so."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.cpu_quantized import (
    DequantizedEmbedding,
    DequantizedLinear,
    use_dequantized_matmul,
)
from tunewire.trainer.worker.logprobs import trained_loss, trained_positions

from .probe_trained_loss import chat_like_batch

pytestmark = pytest.mark.timeout(300)


def make(tiny_model_dir) -> nn.Module:
    """The tiny model quantized (head and embedding too), then LoRA on every block."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(tiny_model_dir)
    model.set_dtype(mx.float32)
    nn.quantize(model, group_size=32, bits=4)
    model.freeze()
    mx.random.seed(0)
    params = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": None}
    linear_to_lora_layers(model, len(model.layers), params)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.01
    model.train()
    mx.eval(model.parameters())
    return model


def loss_and_grads(model, tokens, mask):
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    (loss, _), grads = nn.value_and_grad(model, trained_loss)(
        model, mx.array(tokens), positions.arrays(), normalizer
    )
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


def test_dequantized_matmul_gives_the_quantized_kernels_loss_and_gradients(tiny_model_dir):
    native = make(tiny_model_dir)
    swapped = make(tiny_model_dir)
    assert use_dequantized_matmul(swapped, mx.gpu) == 0  # other devices keep the kernel
    changed = use_dequantized_matmul(swapped, mx.cpu)
    kinds = {type(m) for _, m in swapped.named_modules()}
    assert DequantizedLinear in kinds and nn.QuantizedLinear not in kinds
    # 7 linears per block, 2 blocks, the untied head (the embedding is not used as a head).
    assert changed == 2 * 7 + 1 + 1 and DequantizedEmbedding in kinds
    tokens, mask = chat_like_batch(native.args.vocab_size, seed=7)
    want_loss, want = loss_and_grads(native, tokens, mask)
    got_loss, got = loss_and_grads(swapped, tokens, mask)
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    assert want.keys() == got.keys() and all("lora" in k for k in want)
    for name, w in want.items():
        assert mx.abs(got[name] - w).max().item() <= 1e-4 * mx.abs(w).max().item(), name
    # The weights stay quantized (and saved adapters stay mlx-lm's).
    q = swapped.layers[0].self_attn.q_proj.linear
    assert q.weight.dtype == mx.uint32 and isinstance(q, nn.QuantizedLinear)


def test_a_qlora_job_on_the_cpu_uses_the_dequantized_path(make_config, run_worker):
    worker = run_worker(make_config("qlora", method="qlora", quantization={"group_size": 32}))
    assert worker.returncode == 0, worker.log()
    logs = [e.message for e in worker.of_type("log")]
    assert any("quantized layers multiply by their dequantized weights" in m for m in logs), logs
    losses = list(worker.losses().values())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.real_model
def test_smollm2s_qlora_loss_and_gradients_match_the_quantized_kernel():
    from tunewire.models import smollm2

    from .test_trained_loss import probe

    out = probe(smollm2.ensure_smollm2(log=lambda _: None), "qlora-cpu", 1, 49)
    # 30 blocks × 7 linears, and the 8-bit embedding that is also the tied head.
    assert out["changed"] == 30 * 7 + 1
    assert out["loss_rel"] <= 1e-5, out["loss_rel"]
    worst = {n: r for n, r in out["grads_rel"].items() if r is None or r > 1e-3}
    assert not worst, worst
