"""Light frozen weights on the CPU: the frozen base kept in half precision and widened per
layer gives the loss and adapter gradients of float32-weights training from the same
(half-representable) weights, at half the base's memory; only where it applies (CPU,
adapter methods, switched on), and a job's worker says it does so."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.light_weights import (
    WideningEmbedding,
    WideningLinear,
    cast_for_cpu,
    plan_half_dtype,
    use_widening_layers,
)
from tunewire.trainer.worker.logprobs import trained_loss, trained_positions

from .probe_trained_loss import chat_like_batch

pytestmark = pytest.mark.timeout(300)


def _rounded(model: nn.Module, half) -> None:
    """The float32 model whose matrices hold `half`-representable values (the reference)."""
    for _, m in model.named_modules():
        if type(m) in (nn.Linear, nn.Embedding):
            m.weight = m.weight.astype(half).astype(mx.float32)


def make(tiny_model_dir, light: bool, dora: bool = False, half=mx.bfloat16) -> nn.Module:
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(tiny_model_dir)
    if light:
        cast_for_cpu(model, half)
    else:
        model.set_dtype(mx.float32)
        _rounded(model, half)
    model.freeze()
    mx.random.seed(0)
    params = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": None}
    linear_to_lora_layers(model, len(model.layers), params, use_dora=dora)
    changed = use_widening_layers(model, half if light else None)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.01
    model.train()
    mx.eval(model.parameters())
    model.changed = changed
    return model


def loss_and_grads(model, tokens, mask):
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    (loss, _), grads = nn.value_and_grad(model, trained_loss)(
        model, mx.array(tokens), positions.arrays(), normalizer
    )
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


def weight_bytes(model: nn.Module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


@pytest.mark.parametrize(("dora", "half"), [(False, mx.bfloat16), (True, mx.float16)])
def test_half_frozen_weights_give_float32_training_loss_and_gradients(tiny_model_dir, dora, half):
    reference = make(tiny_model_dir, light=False, dora=dora, half=half)
    light = make(tiny_model_dir, light=True, dora=dora, half=half)
    # 7 linears per block, 2 blocks, the untied head, the embedding.
    assert light.changed == 2 * 7 + 2 and reference.changed == 0
    kinds = {type(m) for _, m in light.named_modules()}
    assert WideningLinear in kinds and WideningEmbedding in kinds and nn.Linear not in kinds
    assert light.layers[0].self_attn.q_proj.linear.weight.dtype == half
    assert light.layers[0].input_layernorm.weight.dtype == mx.float32
    # The frozen matrices are nearly all of the model: it weighs a little over half.
    assert weight_bytes(light) < 0.55 * weight_bytes(reference)
    tokens, mask = chat_like_batch(reference.args.vocab_size, seed=3)
    want_loss, want = loss_and_grads(reference, tokens, mask)
    got_loss, got = loss_and_grads(light, tokens, mask)
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    assert want.keys() == got.keys() and all(v.dtype == mx.float32 for v in got.values())
    for name, w in want.items():
        assert mx.abs(got[name] - w).max().item() <= 1e-4 * mx.abs(w).max().item(), name


def test_the_plan_applies_only_to_frozen_weights_on_the_cpu(tiny_model_dir):
    from mlx_lm.utils import load_model

    model, _ = load_model(tiny_model_dir)
    assert plan_half_dtype(model, "lora", True, mx.cpu) == mx.bfloat16
    assert plan_half_dtype(model, "qlora", True, mx.cpu) == mx.bfloat16
    assert plan_half_dtype(model, "lora", False, mx.cpu) is None
    assert plan_half_dtype(model, "full", True, mx.cpu) is None
    assert plan_half_dtype(model, "dora", True, mx.gpu) is None  # Metal, CUDA: native dtype
    nn.quantize(model, group_size=32, bits=4)  # nothing float left to keep light
    assert plan_half_dtype(model, "qlora", True, mx.cpu) is None


def test_a_lora_job_keeps_its_frozen_weights_light_unless_told_not_to(make_config, run_worker):
    worker = run_worker(make_config("light", method="lora"))
    assert worker.returncode == 0, worker.log()
    logs = [e.message for e in worker.of_type("log")]
    assert any("frozen layers kept in bfloat16" in m for m in logs), logs
    losses = list(worker.losses().values())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    off = {"half_precision_frozen_weights": False}
    worker = run_worker(make_config("heavy", method="lora", hyperparameters=off))
    assert worker.returncode == 0, worker.log()
    assert not any("frozen layers kept" in e.message for e in worker.of_type("log"))


@pytest.mark.real_model
def test_smollm2_in_bfloat16_trains_as_float32_from_the_same_weights():
    from tunewire.models import smollm2

    path = smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
    reference = make(path, light=False)
    light = make(path, light=True)
    # 30 blocks x 7 linears and the embedding, which is also the tied head (blocked loss).
    assert light.changed == 30 * 7 + 1
    tokens, mask = chat_like_batch(reference.args.vocab_size, rows=2, length=49, seed=5)
    want_loss, want = loss_and_grads(reference, tokens, mask)
    got_loss, got = loss_and_grads(light, tokens, mask)
    del reference, light
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    for name, w in want.items():
        assert mx.abs(got[name] - w).max().item() <= 1e-3 * mx.abs(w).max().item(), name


@pytest.mark.parametrize("quantized", [False, True], ids=["bfloat16", "4-bit"])
def test_a_frozen_small_heads_blocked_loss_makes_one_block_at_a_time(monkeypatch, quantized):
    """Compiled with its gradient, the blocked loss holds far less than the head's float32
    copy: each block's weight is made only after the previous block is reduced (ordered on
    the weight, not on the matmul's input, which let the scheduler make every block up front)."""
    import tunewire.trainer.worker.frozen_head as frozen_head
    from tunewire.trainer.worker.cpu_quantized import use_dequantized_matmul

    vocab, hidden, rows = 65536, 256, 32
    monkeypatch.setattr(frozen_head, "BLOCK_ELEMENTS", 2**16)  # 256 vocabulary rows a block
    embedding = nn.Embedding(vocab, hidden)
    if quantized:
        embedding = nn.QuantizedEmbedding.from_embedding(embedding, group_size=64, bits=4)
        assert use_dequantized_matmul(embedding, mx.cpu) == 1
    else:
        embedding.weight = embedding.weight.astype(mx.bfloat16)
        assert use_widening_layers(embedding, mx.bfloat16) == 1
    assert frozen_head.is_frozen_small_head(embedding)
    h = mx.random.normal((rows, hidden))
    targets = mx.random.randint(0, vocab, (rows,))
    mx.eval(h, targets, embedding.parameters())
    nll = frozen_head.make_blocked_nll(embedding)
    step = mx.compile(mx.value_and_grad(lambda x: nll(x, targets).sum()))

    want_loss = nn.losses.cross_entropy(
        frozen_head.blocked_logits(embedding, h), targets, reduction="sum"
    )
    mx.eval(want_loss)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    loss, d_h = step(h)
    mx.eval(loss, d_h)
    peak = mx.get_peak_memory() - base
    assert abs(loss.item() - want_loss.item()) <= 1e-5 * abs(want_loss.item())
    head_float32 = vocab * hidden * 4
    assert peak < head_float32 / 4, (peak, head_float32)
