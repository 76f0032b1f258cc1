"""Cross-entropy against a frozen head stored small (quantized or bfloat16), a vocabulary block
at a time, so its float32 weight never exists whole.

QLoRA's quantized head (often the tied embedding) and the light-weights head (bfloat16)
must be made float32 for the CPU's matmul. Made whole once per step, that copy is
the head's float32 size (545 MiB for Qwen2.5-0.5B's 151,936 x 896 embedding) on top
of everything else at the step's peak; made per chunk of rows, it is made again for
every chunk. Here the loop runs over the vocabulary instead: each block of the head's
rows is made float32 once in the forward pass (logits of every trained position
against that block, an online log-sum-exp carried from block to block) and once in
the backward pass (the block's softmax minus one-hot, times the block): one block's
weight and one block's logits exist at a time, and the head is widened or
dequantized twice a step, as the whole-copy path did. The head takes no gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx import nn

from tunewire.trainer.worker.cpu_quantized import DequantizedEmbedding, DequantizedLinear
from tunewire.trainer.worker.light_weights import widens

# Floats per block, for the logits (rows x block) and for the weight (block x hidden).
BLOCK_ELEMENTS = 2**23

# (head arrays, first row, end row) -> that block of the head as float32 (rows, hidden)
BlockFn = Callable[[list[mx.array], int, int], mx.array]


def is_frozen_small_head(module: nn.Module) -> bool:
    """A head kept quantized (CPU QLoRA) or in bfloat16 (light weights): blocked loss."""
    return isinstance(module, (DequantizedLinear, DequantizedEmbedding)) or widens(module)


def head_arrays(module: nn.Module) -> list[mx.array]:
    """The stored arrays `block_fn` reads: weight (and scales, biases), then bias if any."""
    names = ["weight", "scales", "biases"] if "scales" in module else ["weight"]
    arrays = [module[n] for n in names]
    return arrays + ([module["bias"]] if "bias" in module else [])


def block_fn(module: nn.Module) -> BlockFn:
    if isinstance(module, (DequantizedLinear, DequantizedEmbedding)):
        group_size, bits = module.group_size, module.bits

        def dequantized(arrays: list[mx.array], a: int, b: int) -> mx.array:
            w, scales, biases = arrays[:3]
            return mx.dequantize(
                w[a:b], scales[a:b], biases[a:b], group_size=group_size, bits=bits
            ).astype(mx.float32)

        return dequantized
    return lambda arrays, a, b: arrays[0][a:b].astype(mx.float32)


def _has_bias(module: nn.Module) -> bool:
    return "bias" in module


def block_rows(vocab: int, hidden: int, rows: int) -> int:
    """Vocabulary rows per block: its logits and its weight each near BLOCK_ELEMENTS."""
    return max(8, min(BLOCK_ELEMENTS // max(rows, 1), BLOCK_ELEMENTS // max(hidden, 1), vocab))


def blocked_logits(module: nn.Module, h: mx.array) -> mx.array:
    """The head's logits for a few rows `h`, made a block at a time (the split check's)."""
    fn, arrays, vocab = block_fn(module), head_arrays(module), int(module["weight"].shape[0])
    block = block_rows(vocab, h.shape[-1], h.shape[0])
    parts: list[mx.array] = []
    for a in range(0, vocab, block):
        # One block's weight at a time (see make_blocked_nll).
        now = mx.depends(list(arrays), parts[-1:]) if parts else arrays
        parts.append(_logits(fn, now, module, h, a, min(a + block, vocab)))
    return mx.concatenate(parts, axis=-1)


def _logits(fn: BlockFn, arrays, module, h, a: int, b: int) -> mx.array:
    z = h @ fn(arrays, a, b).T
    return z + arrays[-1][a:b] if _has_bias(module) else z


def make_blocked_nll(module: nn.Module):
    """nll(hidden (N, D), targets (N,), arrays) -> (N,) float32, with a gradient to hidden."""
    fn, vocab = block_fn(module), int(module["weight"].shape[0])

    def spans(rows: int, hidden: int):
        block = block_rows(vocab, hidden, rows)
        return [(a, min(a + block, vocab)) for a in range(0, vocab, block)]

    @mx.custom_function
    def nll(hidden, targets, arrays):
        n = hidden.shape[0]
        top = mx.full((n,), -mx.inf, mx.float32)
        total, picked = mx.zeros((n,), mx.float32), mx.zeros((n,), mx.float32)
        for a, b in spans(n, hidden.shape[-1]):
            # The block's weight is made after the previous block is reduced: left free
            # (or with only the matmul's input ordered), the scheduler makes every block's
            # float32 weight up front and holds them all: the whole head, twice.
            now = mx.depends(list(arrays), [total])
            z = _logits(fn, now, module, hidden, a, b)
            new_top = mx.maximum(top, z.max(axis=-1))
            total = total * mx.exp(top - new_top) + mx.exp(z - new_top[:, None]).sum(axis=-1)
            top = new_top
            inside = (targets >= a) & (targets < b)
            at = mx.clip(targets - a, 0, b - a - 1)
            picked = picked + mx.where(inside, mx.take_along_axis(z, at[:, None], -1)[:, 0], 0.0)
        lse = top + mx.log(total)
        return lse - picked, lse

    @nll.vjp
    def nll_vjp(primals, cotangents, outputs):
        hidden, targets, arrays = primals
        c, lse = cotangents[0], outputs[1]
        d_hidden = mx.zeros_like(hidden)
        for a, b in spans(hidden.shape[0], hidden.shape[-1]):
            # After the cotangent and the previous block (see the forward pass).
            now = mx.depends(list(arrays), [d_hidden, c])
            w = fn(now, a, b)
            z = hidden @ w.T
            z = z + now[-1][a:b] if _has_bias(module) else z
            one_hot = mx.arange(a, b)[None, :] == targets[:, None]
            d_z = (mx.exp(z - lse[:, None]) - one_hot) * c[:, None]
            d_hidden = d_hidden + d_z @ w
        return d_hidden, mx.zeros_like(targets), [mx.zeros_like(x) for x in arrays]

    return lambda hidden, targets: nll(hidden, targets, head_arrays(module))[0]
