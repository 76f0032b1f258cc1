"""AdamW as users of other trainers expect: bias-corrected by default (PyTorch's AdamW), and
MLX's uncorrected update when the spec asks for it; both against a direct computation."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from tunewire.trainer.worker.optim import build_optimizer

pytestmark = pytest.mark.timeout(60)

LR, WD, B1, B2, EPS = 0.01, 0.1, 0.9, 0.999, 1e-8


def direct_adamw(w, grads, bias_correction: bool, weight_decay: float = WD):
    """PyTorch's `torch.optim.AdamW` update, written out (bias_correction=False: no
    division by 1 - beta^t, as MLX's default)."""
    w, m, v = w.astype(np.float64), np.zeros_like(w, np.float64), np.zeros_like(w, np.float64)
    for t, g in enumerate(grads, start=1):
        w = w * (1 - LR * weight_decay)
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        m_hat, v_hat = (m / (1 - B1**t), v / (1 - B2**t)) if bias_correction else (m, v)
        w = w - LR * m_hat / (np.sqrt(v_hat) + EPS)
    return w


def run_optimizer(hp, w, grads):
    optimizer = build_optimizer(hp, steps=len(grads))
    params = {"w": mx.array(w)}
    for g in grads:
        params = optimizer.apply_gradients({"w": mx.array(g)}, params)
        mx.eval(params)
    return np.array(params["w"])


@pytest.fixture
def hyperparameters(make_config):
    # The daemon's defaults applied to a spec that says nothing of bias correction.
    hp = make_config(
        "adamw", hyperparameters={"optimizer": "adamw", "weight_decay": WD}
    ).hyperparameters
    return dataclasses.replace(
        hp, learning_rate=LR, learning_rate_schedule="constant", warmup_steps=0
    )


def test_adamw_is_bias_corrected_by_default(hyperparameters):
    assert hyperparameters.bias_correction is True
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 7)).astype(np.float32)
    grads = [rng.normal(size=w.shape).astype(np.float32) for _ in range(6)]
    got = run_optimizer(hyperparameters, w, grads)
    np.testing.assert_allclose(got, direct_adamw(w, grads, True), rtol=1e-5, atol=1e-6)
    # The first corrected step moves every weight by about lr (m_hat / sqrt(v_hat) = ±1),
    # the uncorrected one by about lr * 0.1 / sqrt(0.001) ≈ 3.2 lr: the two really differ.
    uncorrected = direct_adamw(w, grads, False)
    assert np.abs(got - uncorrected).max() > 1e-2


def test_bias_correction_can_be_turned_off(make_config, hyperparameters):
    spec = {"optimizer": "adamw", "weight_decay": WD, "bias_correction": False}
    off = make_config("uncorrected", hyperparameters=spec).hyperparameters
    assert off.bias_correction is False
    hp = dataclasses.replace(hyperparameters, bias_correction=off.bias_correction)
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=w.shape).astype(np.float32) for _ in range(4)]
    np.testing.assert_allclose(
        run_optimizer(hp, w, grads), direct_adamw(w, grads, False), rtol=1e-5, atol=1e-6
    )


def test_adam_follows_the_same_setting(hyperparameters):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4,)).astype(np.float32)
    grads = [rng.normal(size=w.shape).astype(np.float32) for _ in range(3)]
    for corrected in (True, False):
        hp = dataclasses.replace(hyperparameters, optimizer="adam", bias_correction=corrected)
        np.testing.assert_allclose(
            run_optimizer(hp, w, grads),
            direct_adamw(w, grads, corrected, weight_decay=0.0),
            rtol=1e-5,
            atol=1e-6,
        )
