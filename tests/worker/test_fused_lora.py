"""Adapters of siblings that share an input (q/k/v, gate/up) take it in one matmul: the loss
and gradients stay those of mlx-lm's one-matmul-per-projection adapters (LoRA, DoRA,
QLoRA on the CPU's dequantized path, light frozen weights, checkpointed blocks, ranks
that differ), only what is adapted and shares its input fuses, dropout stays drawn per
projection, and a job's saved adapters, losses and resume are those of the unfused path."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.checkpointed_blocks import checkpoint_blocks
from tunewire.trainer.worker.fused_lora import UNFUSED_ENV, fuse, is_fused, unfuse
from tunewire.trainer.worker.logprobs import output_head, trained_loss, trained_positions
from tunewire.trainer.worker.model_setup import setup_model

from .probe_trained_loss import chat_like_batch

pytestmark = pytest.mark.timeout(300)

ATTENTION = ("q_proj", "k_proj", "v_proj")
MLP = ("gate_proj", "up_proj")


def perturbed(model: nn.Module, seed: int = 1) -> nn.Module:
    """B away from zero (else A's gradients are zero) and DoRA's magnitudes off the norms."""
    mx.random.seed(seed)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.05
        if hasattr(module, "m") and hasattr(module, "linear"):
            module.m = module.m * (1 + 0.1 * mx.random.normal(module.m.shape))
    mx.eval(model.parameters())
    return model


def loss_and_grads(model, tokens, mask):
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    output_head(model)  # found outside the traced step, as the worker does
    value_and_grad = nn.value_and_grad(model, trained_loss)
    # Compiled as the worker's step is: the siblings' shared input is seen while tracing.
    state = [model.state, mx.random.state]
    step = mx.compile(lambda *args: value_and_grad(model, *args), inputs=state, outputs=state)
    (loss, _), grads = step(mx.array(tokens), positions.arrays(), normalizer)
    mx.eval(loss, grads)
    return loss.item(), dict(tree_flatten(grads))


def assert_same(got, want) -> None:
    (got_loss, got_grads), (want_loss, want_grads) = got, want
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    assert got_grads.keys() == want_grads.keys()
    for name, w in want_grads.items():
        scale = max(mx.abs(w).max().item(), 1e-8)
        assert mx.abs(got_grads[name] - w).max().item() <= 1e-5 * scale, name


def fused_then_unfused(model, tokens, mask):
    fused = loss_and_grads(model, tokens, mask)
    groups = [m._shared_input for _, m in model.named_modules() if is_fused(m)]
    assert groups and all(g.enabled for g in groups)  # the trace did take the fused path
    changed = unfuse(model)
    assert changed and not any(is_fused(m) for _, m in model.named_modules())
    return fused, loss_and_grads(model, tokens, mask)


@pytest.mark.parametrize(
    ("method", "light"), [("lora", True), ("lora", False), ("dora", True), ("qlora", True)]
)
def test_fused_adapters_give_the_unfused_loss_and_gradients(make_config, method, light):
    config = make_config(
        method=method,
        quantization={"group_size": 32},
        hyperparameters={"half_precision_frozen_weights": light},
    )
    loaded, _, _ = setup_model(config)
    model = perturbed(loaded.model)
    assert loaded.fused_groups == 2 * len(model.layers)
    if method == "qlora":
        assert loaded.dequantized_layers  # the CPU's path: dequantized bases under the adapters
    if light and method != "qlora":  # QLoRA's frozen matrices are quantized, not widened
        assert loaded.widened_layers
    block = model.layers[0]
    assert all(is_fused(block.self_attn[n]) for n in ATTENTION)
    assert all(is_fused(block.mlp[n]) for n in MLP)
    assert not is_fused(block.self_attn.o_proj) and not is_fused(block.mlp.down_proj)
    names = [n for n, _ in tree_flatten(model.trainable_parameters())]
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=5)
    fused, plain = fused_then_unfused(model, tokens, mask)
    assert_same(fused, plain)
    assert names == [n for n, _ in tree_flatten(model.trainable_parameters())]


def test_checkpointed_blocks_and_ranks_that_differ_fuse_too(make_config):
    loaded, _, _ = setup_model(make_config(method="lora"))
    model = loaded.model
    # Ranks 4, 2, 6 across q, k, v (mlx-lm's saved layout allows it; the spec has one rank).
    unfuse(model)
    for rank, name in zip((4, 2, 6), ATTENTION, strict=True):
        for block in model.layers:
            adapter = block.self_attn[name]
            adapter.lora_a = mx.random.normal((adapter.lora_a.shape[0], rank)) * 0.1
            adapter.lora_b = mx.zeros((rank, adapter.lora_b.shape[1]))
    assert fuse(model) == 2 * len(model.layers)
    checkpoint_blocks(model.layers, 1)
    perturbed(model)
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=6)
    fused, plain = fused_then_unfused(model, tokens, mask)
    assert_same(fused, plain)


def test_only_adapted_siblings_fuse(make_config):
    loaded, _, _ = setup_model(
        make_config(method="lora", lora={"target_modules": ["q_proj", "v_proj", "down_proj"]})
    )
    model = perturbed(loaded.model)
    assert loaded.fused_groups == len(model.layers)  # q with v; no gate/up pair adapted
    attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
    assert is_fused(attn.q_proj) and is_fused(attn.v_proj)
    assert type(attn.k_proj) is nn.Linear or not hasattr(attn.k_proj, "lora_a")
    assert not is_fused(mlp.down_proj) and hasattr(mlp.down_proj, "lora_a")
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=7)
    fused, plain = fused_then_unfused(model, tokens, mask)
    assert_same(fused, plain)


def test_siblings_called_with_different_inputs_fall_back_to_one_matmul_each(make_config):
    loaded, _, _ = setup_model(make_config(method="lora"))
    attn = perturbed(loaded.model).layers[0].self_attn
    x, other = mx.random.normal((2, 5, 64)), mx.random.normal((2, 5, 64))
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    assert x.shape[-1] == q.lora_a.shape[0]
    fused = [q(x), k(other), v(x)]  # k's input is not q's: the group stops fusing
    assert not q._shared_input.enabled
    again = [q(x), k(other), v(x)]
    unfuse(loaded.model)
    plain = [q(x), k(other), v(x)]
    for got, also, want in zip(fused, again, plain, strict=True):
        assert mx.allclose(got, want, rtol=1e-5, atol=1e-6).item()
        assert mx.allclose(also, want, rtol=1e-5, atol=1e-6).item()


def test_dropout_is_drawn_per_projection_as_mlx_lm_does(make_config):
    loaded, _, _ = setup_model(make_config(method="lora", lora={"dropout": 0.3}))
    model = perturbed(loaded.model)
    assert loaded.fused_groups  # fused, but dropping projections compute unfused
    tokens, mask = chat_like_batch(model.args.vocab_size, seed=8)
    mx.random.seed(11)
    fused = loss_and_grads(model, tokens, mask)
    unfuse(model)
    mx.random.seed(11)
    assert_same(fused, loss_and_grads(model, tokens, mask))
    # In evaluation dropout is off, and the group fuses again: still the same loss.
    fuse(model)
    model.eval()
    positions = trained_positions(tokens, mask)
    normalizer = mx.array(float(positions.count))
    fused_eval = trained_loss(model, mx.array(tokens), positions.arrays(), normalizer)[0]
    assert model.layers[0].self_attn.q_proj._shared_input._waiting == {}
    unfuse(model)
    plain_eval = trained_loss(model, mx.array(tokens), positions.arrays(), normalizer)[0]
    assert math.isclose(fused_eval.item(), plain_eval.item(), rel_tol=1e-5)


SHORT = {"hyperparameters": {"max_steps": 8, "seed": 2}, "checkpointing": {"interval_steps": 4}}


def test_a_fused_job_saves_mlx_lms_adapters_and_trains_and_resumes_as_an_unfused_one(
    make_config, run_worker, monkeypatch
):
    fused = run_worker(make_config("fused", **SHORT))
    assert fused.done().outcome == "succeeded", fused.log()
    assert "take it in one matmul" in fused.log()
    monkeypatch.setenv(UNFUSED_ENV, "1")
    plain = run_worker(make_config("plain", **SHORT))
    monkeypatch.delenv(UNFUSED_ENV)
    assert plain.done().outcome == "succeeded", plain.log()
    assert "take it in one matmul" not in plain.log()

    def adapters(worker):
        return mx.load(str(worker.done().artifacts.adapter_path + "/adapters.safetensors"))

    got, want = adapters(fused), adapters(plain)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert any(k.endswith("self_attn.q_proj.lora_a") for k in got)
    for step, loss in plain.losses().items():
        assert math.isclose(fused.losses()[step], loss, rel_tol=1e-5), step

    checkpoint = next(c.path for c in fused.of_type("checkpoint") if c.step == 4)
    resumed = run_worker(make_config("resumed", **SHORT), resume_from=checkpoint)
    assert resumed.done().outcome == "succeeded", resumed.log()
    for step, loss in resumed.losses().items():
        assert math.isclose(loss, fused.losses()[step], rel_tol=1e-5), step
    assert set(resumed.losses()) == {5, 6, 7, 8}
