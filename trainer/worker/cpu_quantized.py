"""QLoRA that runs on a CPU: quantized layers dequantize their weight just before the matmul.

mlx's CPU `quantized_matmul` runs at about 1.7 GFLOP/s on this kind of machine,
while dequantizing a layer's weight and handing the float32 product to
OpenBLAS runs at 65-79: QLoRA was 17x slower than LoRA. On the CPU device only
(`use_dequantized_matmul` is a no-op elsewhere: Metal and CUDA keep the native
kernel), each affine-quantized linear layer, and a quantized embedding used as
the tied output head, computes `x @ dequantize(w).T` through a custom gradient
that dequantizes again in the backward pass instead of keeping the float copy:
the float weight of one layer exists at a time, so the model's memory stays near
its quantized footprint. The frozen quantized weights take no gradient.
"""

from __future__ import annotations

import mlx.core as mx
from mlx import nn


def _dequantized_matmul(group_size: int, bits: int):
    def dense(w, scales, biases):
        return mx.dequantize(w, scales, biases, group_size=group_size, bits=bits)

    @mx.custom_function
    def matmul(x, w, scales, biases):
        (w,) = mx.depends([w], [x])  # dequantized when the input is there (see the vjp)
        return x @ dense(w, scales, biases).astype(x.dtype).T

    @matmul.vjp
    def matmul_vjp(primals, cotangent, _output):
        _x, w, scales, biases = primals
        # Dequantized only once the cotangent is there: left free, the scheduler may
        # dequantize every layer's weight up front and hold them all at once.
        (w,) = mx.depends([w], [cotangent])
        d_x = cotangent @ dense(w, scales, biases).astype(cotangent.dtype)
        return d_x, mx.zeros_like(w), mx.zeros_like(scales), mx.zeros_like(biases)

    return matmul


class DequantizedLinear(nn.QuantizedLinear):
    """A QuantizedLinear (same weights, same checkpoints) that multiplies in float."""

    def __call__(self, x):
        matmul = _dequantized_matmul(self.group_size, self.bits)
        out = matmul(x, self["weight"], self["scales"], self["biases"])
        return out + self["bias"] if "bias" in self else out


class DequantizedEmbedding(nn.QuantizedEmbedding):
    """A QuantizedEmbedding whose use as the tied output head multiplies in float."""

    def as_linear(self, x):
        matmul = _dequantized_matmul(self.group_size, self.bits)
        return matmul(x, self["weight"], self["scales"], self["biases"])


def _swappable(module: nn.Module) -> bool:
    # Affine quantization only (weights, scales and biases); other modes keep the kernel.
    return getattr(module, "mode", "affine") == "affine" and module.get("biases") is not None


def use_dequantized_matmul(model: nn.Module, device: mx.Device | None = None) -> int:
    """On the CPU, make every affine-quantized linear (and quantized embedding) multiply by
    its dequantized weight; returns how many layers changed (0 on other devices)."""
    device = device or mx.default_device()
    if device != mx.cpu:
        return 0
    changed = 0
    for _, module in model.named_modules():
        if type(module) is nn.QuantizedLinear and _swappable(module):
            module.__class__ = DequantizedLinear
            changed += 1
        elif type(module) is nn.QuantizedEmbedding and _swappable(module):
            module.__class__ = DequantizedEmbedding
            changed += 1
    return changed
