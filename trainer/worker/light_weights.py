"""Light frozen weights: on the CPU the frozen base stays in half precision and is widened
per layer inside the step.

The worker computes in float32 on the CPU (half-precision matmuls there are slow
and lossy), which used to mean holding the whole frozen base in float32: twice
what a bfloat16 checkpoint weighs. Here the frozen matrices of the LoRA, DoRA and
QLoRA methods (every linear layer's weight and the embedding, which may be the
tied output head) are kept in bfloat16: exactly the checkpoint's values when it is
stored in bfloat16, as most are; a float32 or float16 checkpoint's are rounded to
bfloat16's 8-bit mantissa (what a GPU run in bfloat16 computes with; set
`hyperparameters.half_precision_frozen_weights: false` to keep them exact);
everything else (norms, biases, adapters, optimizer state, activations) stays
float32. Each linear layer multiplies `x @ w.astype(float32).T` through a custom
gradient that widens again in the backward pass, ordered after the cotangent
(`mx.depends`), instead of keeping the float32 copy for it: one layer's float32
weight exists at a time, so the base costs half. The loss widens a frozen head a
vocabulary block at a time (`frozen_head`).

Only on the CPU and only for frozen weights: FULL trains every weight in float32,
and Metal and CUDA already compute in the checkpoint's half precision
(`plan_half_dtype` returns None there; chosen at run time).
"""

from __future__ import annotations

import mlx.core as mx
from mlx import nn

# bfloat16, not float16: mlx's CPU widens bfloat16 to float32 at memory speed (a shift),
# about 1% of a layer's matmul on SmolLM2's shapes, but float16 about 10% of it
# (bench/RESULTS.md); and bfloat16 keeps float32's range.
HALF = mx.bfloat16
HALF_DTYPES = (mx.bfloat16, mx.float16)
ADAPTER_METHODS = ("lora", "dora", "qlora")


def plan_half_dtype(
    model: nn.Module, method: str, enabled: bool, device: mx.Device | None = None
) -> mx.Dtype | None:
    """The dtype the frozen matrices keep, or None (off, not the CPU, FULL, no float matrix)."""
    device = device or mx.default_device()
    if not enabled or device != mx.cpu or method not in ADAPTER_METHODS:
        return None
    return HALF if _light_candidates(model) else None


def _light_candidates(model: nn.Module) -> list[nn.Module]:
    # Exact types: quantized layers (subclasses) keep their own weights and path.
    return [
        m
        for _, m in model.named_modules()
        if type(m) in (nn.Linear, nn.Embedding) and mx.issubdtype(m.weight.dtype, mx.floating)
    ]


def cast_for_cpu(model: nn.Module, half: mx.Dtype | None) -> None:
    """Everything to float32, except (when `half` is given) the linear and embedding matrices,
    which go to `half` straight from the checkpoint's values."""
    originals = [(m, m.weight) for m in _light_candidates(model)] if half is not None else []
    model.set_dtype(mx.float32)
    for module, weight in originals:
        module.weight = weight.astype(half)


def _widened_matmul():
    @mx.custom_function
    def matmul(x, w):
        (w,) = mx.depends([w], [x])  # widened when the input is there (see the vjp)
        return x @ w.astype(x.dtype).T

    @matmul.vjp
    def matmul_vjp(primals, cotangent, _output):
        _x, w = primals
        # Widened again once the cotangent is there: kept from the forward pass,
        # every layer's float32 copy would be alive at once during the backward.
        (w,) = mx.depends([w], [cotangent])
        return cotangent @ w.astype(cotangent.dtype), mx.zeros_like(w)

    return matmul


class WideningLinear(nn.Linear):
    """An nn.Linear (same weights, same checkpoints) whose half-precision weight is widened
    to the input's dtype for the matmul. Frozen: its weight takes no gradient."""

    def __call__(self, x):
        out = _widened_matmul()(x, self["weight"])
        return out + self["bias"] if "bias" in self else out


class WideningEmbedding(nn.Embedding):
    """An nn.Embedding whose half-precision rows come out float32, and whose use as the tied
    output head multiplies by the widened weight."""

    def __call__(self, x):
        return self["weight"][x].astype(mx.float32)

    def as_linear(self, x):
        return _widened_matmul()(x, self["weight"])


def use_widening_layers(model: nn.Module, half: mx.Dtype | None) -> int:
    """Swap the frozen half-precision linears and embeddings for their widening versions;
    returns how many changed (0 when `half` is None). Call after the adapters are added."""
    if half is None:
        return 0
    changed = 0
    for module in _light_candidates(model):
        if module.weight.dtype != half:
            continue
        module.__class__ = WideningLinear if type(module) is nn.Linear else WideningEmbedding
        changed += 1
    _float32_dora_magnitudes(model)
    return changed


def _float32_dora_magnitudes(model: nn.Module) -> None:
    """DoRA's magnitudes were taken from the half weights at creation: make them the float32
    norms (trainable, so float32 like every trained array)."""
    for _, module in model.named_modules():
        if hasattr(module, "m") and hasattr(module, "linear"):
            weight = getattr(module.linear, "weight", None)
            if isinstance(weight, mx.array) and weight.dtype in HALF_DTYPES:
                module.m = mx.linalg.norm(weight.astype(mx.float32), axis=1)


def widens(module: nn.Module) -> bool:
    return isinstance(module, (WideningLinear, WideningEmbedding))
