"""Gradient checkpointing block by block: the chosen blocks recompute their activations,
the loss and gradients stay those of no checkpointing, and nothing outside the chosen
blocks (another block, another model in the process) changes."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.checkpointed_blocks import checkpoint_blocks, is_checkpointed
from tunewire.trainer.worker.errors import WorkerError
from tunewire.trainer.worker.logprobs import trained_loss, trained_positions

from .probe_trained_loss import chat_like_batch

pytestmark = pytest.mark.timeout(300)


def make(tiny_model_dir, method: str) -> nn.Module:
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(tiny_model_dir)
    model.set_dtype(mx.float32)
    mx.random.seed(0)
    if method == "full":
        model.unfreeze()
    else:
        model.freeze()
        params = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": None}
        linear_to_lora_layers(model, len(model.layers), params, use_dora=method == "dora")
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


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
@pytest.mark.parametrize("count", [1, 0])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(tiny_model_dir, method, count):
    plain = make(tiny_model_dir, method)
    checkpointed = make(tiny_model_dir, method)
    layers = len(checkpointed.layers)
    assert checkpoint_blocks(checkpointed.layers, count) == (count or layers)
    flags = [is_checkpointed(b) for b in checkpointed.layers]
    assert flags == [True] * (count or layers) + [False] * (layers - (count or layers))
    # Only instances moved: the other model's blocks, of the same class, are untouched.
    assert not any(is_checkpointed(b) for b in plain.layers)
    assert type(plain.layers[0]) is not type(checkpointed.layers[0])
    assert isinstance(checkpointed.layers[0], type(plain.layers[0]))
    # Parameter names (and so saved adapters) are the same.
    names = [n for n, _ in tree_flatten(plain.trainable_parameters())]
    assert names == [n for n, _ in tree_flatten(checkpointed.trainable_parameters())]

    tokens, mask = chat_like_batch(plain.args.vocab_size, seed=5)
    want_loss, want = loss_and_grads(plain, tokens, mask)
    got_loss, got = loss_and_grads(checkpointed, tokens, mask)
    assert abs(got_loss - want_loss) <= 1e-5 * abs(want_loss)
    assert want.keys() == got.keys()
    for name, w in want.items():
        assert mx.abs(got[name] - w).max().item() <= 1e-5 * max(mx.abs(w).max().item(), 1e-8), name


def test_more_blocks_than_the_model_has_is_a_clear_error(tiny_model_dir):
    model = make(tiny_model_dir, "lora")
    with pytest.raises(WorkerError) as caught:
        checkpoint_blocks(model.layers, len(model.layers) + 1)
    assert "gradient_checkpointing_blocks" in caught.value.message
    assert f"has {len(model.layers)} blocks" in caught.value.message
    assert not any(is_checkpointed(b) for b in model.layers)


def test_a_job_checkpointing_one_block_trains(make_config, run_worker):
    worker = run_worker(
        make_config(
            "gc1",
            method="lora",
            hyperparameters={"gradient_checkpointing": True, "gradient_checkpointing_blocks": 1},
        )
    )
    assert worker.returncode == 0, worker.log()
    losses = [m.loss for m in worker.of_type("metrics")]
    assert losses and losses[-1] < losses[0]
