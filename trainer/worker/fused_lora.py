"""LoRA side paths that share an input take it in one matmul.

In a block, q, k and v project the same normed hidden state, and so do gate and
up. mlx-lm's adapters compute `(x @ A) @ B` per projection: one thin matmul
(N x D by D x r) each, every one reading all of x for a few columns, and their
gradients as many again (bench/RESULTS.md: the seven side paths at about 4
GFLOP/s against 105 for the frozen matmuls). Here the adapted siblings of such a
group compute `x @ [A_q | A_k | A_v]` once and each takes its columns; the
backward pass then has one `x.T @ d(xA)` and one `d(xA) @ A.T` for the group.

Only the computation changes: each adapter keeps its own `lora_a`, `lora_b` (and
DoRA's `m`) where mlx-lm puts them, read at call time, so the optimizer, the
saved adapters.safetensors, export and resume see exactly mlx-lm's layout. The
adapters are moved instance by instance to a subclass (no class is patched), and
`unfuse` moves them back.

Correct by construction, fused only where it pays:
- a member fuses with its siblings only when the model calls them with the very
  same array (checked by identity at every call); a model whose "siblings" do not
  share their input falls back to one matmul each, for good;
- while dropout is active (p > 0, training) each projection draws its own mask on
  its own input, as mlx-lm does, so that projection is computed unfused; in
  evaluation dropout is off and the group fuses again;
- only exact LoRALinear / DoRALinear adapters fuse (not the mixture-of-experts
  switch adapters), and only where at least two siblings are adapted.

`TUNEWIRE_UNFUSED_LORA=1` in the worker's environment keeps every adapter unfused
(for the benchmarks that compare the two).
"""

from __future__ import annotations

import os

import mlx.core as mx
from mlx import nn
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear

UNFUSED_ENV = "TUNEWIRE_UNFUSED_LORA"
# Sibling projections that take their module's one input (Llama, Qwen, Mistral, Gemma, ...).
SHARED_INPUT_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class SharedInput:
    """One group's `x @ [A_1 | ... | A_n]`: computed by whichever member the model calls
    first, handed to the others when they are called with the same array."""

    def __init__(self, members: list[nn.Module]):
        self.members = members
        self.enabled = True  # False once the members were seen taking different inputs
        self._x: mx.array | None = None
        self._waiting: dict[int, mx.array] = {}  # id(member) -> its columns of x @ A

    def project(self, member: nn.Module, x: mx.array) -> mx.array:
        """`dropout(x) @ member.lora_a`, from the group's one matmul where it can be."""
        if not self.enabled or any(_dropping(m) for m in self.members):
            self._forget()
            return member.dropout(x) @ member.lora_a
        if self._waiting:
            if x is self._x and id(member) in self._waiting:
                part = self._waiting.pop(id(member))
                if not self._waiting:
                    self._x = None  # the round is over: hold no array past it
                return part
            # A sibling called with another input: this model's siblings do not share it.
            self.enabled = False
            self._forget()
            return x @ member.lora_a
        a = mx.concatenate([m.lora_a for m in self.members], axis=1)
        ranks = [m.lora_a.shape[1] for m in self.members]
        offsets = [sum(ranks[: i + 1]) for i in range(len(ranks) - 1)]
        parts = mx.split(x @ a, offsets, axis=-1)
        mine = None
        for m, part in zip(self.members, parts, strict=True):
            if m is member:
                mine = part
            else:
                self._waiting[id(m)] = part
        self._x = x
        return mine

    def _forget(self) -> None:
        self._x = None
        self._waiting = {}


def _dropping(module: nn.Module) -> bool:
    dropout = module.dropout
    return dropout.training and dropout._p_1 != 1


class FusedLoRALinear(LoRALinear):
    """mlx-lm's LoRALinear (same parameters) whose `x @ A` comes from its group."""

    def __call__(self, x):
        y = self.linear(x)
        z = self._shared_input.project(self, x) @ self.lora_b
        return y + (self.scale * z).astype(x.dtype)


class FusedDoRALinear(DoRALinear):
    """mlx-lm's DoRALinear (same parameters, same per-projection norm) whose `x @ A` comes
    from its group; the rest is mlx-lm's DoRALinear.__call__ unchanged."""

    def __call__(self, x):
        w = self._dequantized_weight()
        y = x @ w.T
        z = self._shared_input.project(self, x) @ self.lora_b
        out = y + (self.scale * z).astype(x.dtype)
        adapted = w + (self.scale * self.lora_b.T) @ self.lora_a.T
        denom = mx.stop_gradient(mx.linalg.norm(adapted, axis=1))
        out = (self.m / denom).astype(x.dtype) * out
        if "bias" in self.linear:
            out = out + self.linear.bias
        return out


FUSED = {LoRALinear: FusedLoRALinear, DoRALinear: FusedDoRALinear}
UNFUSED = {fused: plain for plain, fused in FUSED.items()}


def fuse(model: nn.Module) -> int:
    """Group the adapted siblings that share an input; returns how many groups (0 when
    `TUNEWIRE_UNFUSED_LORA` is set or nothing fuses)."""
    if os.environ.get(UNFUSED_ENV, "") not in ("", "0"):
        return 0
    groups = 0
    for _, parent in model.named_modules():
        for names in SHARED_INPUT_GROUPS:
            members = [parent[n] for n in names if type(parent.get(n)) in FUSED]
            if len(members) < 2 or len({type(m) for m in members}) > 1:
                continue
            if len({m.lora_a.shape[0] for m in members}) > 1:
                continue  # different input sizes: not one input
            shared = SharedInput(members)
            for member in members:
                member.__class__ = FUSED[type(member)]
                member._shared_input = shared
            groups += 1
    return groups


def unfuse(model: nn.Module) -> int:
    """Back to mlx-lm's own adapters; returns how many changed."""
    changed = 0
    for _, module in model.named_modules():
        if type(module) in UNFUSED:
            module.__class__ = UNFUSED[type(module)]
            del module._shared_input
            changed += 1
    return changed


def is_fused(module: nn.Module) -> bool:
    return type(module) in UNFUSED
