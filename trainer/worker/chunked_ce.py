"""Cross-entropy of hidden states against the vocabulary, a chunk of rows at a time.

The stock step projects every position onto the whole vocabulary and keeps
about three float32 copies of those logits for the backward pass (1.7 GiB at
1,024 tokens of a 152k vocabulary). Here the caller hands over only the
hidden states of trained positions, and `chunked_nll` reduces them to their
negative log-likelihoods `CHUNK_ELEMENTS` logits at a time, with a custom
gradient (`mx.custom_function`) that recomputes each chunk's logits in the
backward pass: only one chunk's logits exist at any time, forward or backward
(the idea of Apple's Cut Cross-Entropy and Liger's fused linear cross-entropy,
in plain MLX so it runs on CPU, Metal and CUDA alike).

`OutputHead` splits an mlx-lm model into its body (tokens → final hidden
states) and its output head (hidden → logits), and checks on a few tokens that
the two together give the model's own logits: a model with anything between
them (soft-capping, logit scales) is not split and trains on the plain path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten

from tunewire.trainer.worker.frozen_head import (
    blocked_logits,
    is_frozen_small_head,
    make_blocked_nll,
)

# Logits per chunk: 2**23 float32 values (32 MiB), e.g. 170 rows of a 49k vocabulary.
CHUNK_ELEMENTS = 2**23


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: a multiple of 8, at least 8, the chunk's logits near CHUNK_ELEMENTS."""
    return max(8, (CHUNK_ELEMENTS // max(vocab_size, 1)) // 8 * 8)


# (trainable head arrays, hidden) → logits
HeadFn = Callable[[list[mx.array], mx.array], mx.array]


def _rows_nll(logits: mx.array, targets: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return mx.logsumexp(logits, axis=-1) - picked


def make_chunked_nll(head_fn: HeadFn, rows: int, linear: bool = False):
    """nll(hidden (N, D), targets (N,), params) → (N,) float32, with gradients to
    hidden and params.

    `params` are the head's trainable arrays (empty when the head is frozen: then it
    takes no gradient). `linear` says the head is `h @ params[0].T (+ params[1])`:
    then the backward pass writes the weight's gradient straight into one
    accumulator (`mx.addmm`), instead of a vocab x hidden gradient per chunk that
    the lazy graph kept alive until the sum (FULL on a 152k vocabulary: one
    272 MiB buffer per chunk, ~8 GiB at 4x256)."""

    def spans(n: int):
        return [(s, min(s + rows, n)) for s in range(0, n, rows)]

    @mx.custom_function
    def nll(hidden, targets, params):
        parts = [
            _rows_nll(head_fn(params, hidden[a:b]), targets[a:b]) for a, b in spans(len(hidden))
        ]
        return mx.concatenate(parts) if len(parts) > 1 else parts[0]

    def d_logits_of(logits, t, c):
        # d nll / d logits = softmax - one-hot, scaled by the row's cotangent.
        probs = mx.softmax(logits.astype(mx.float32), axis=-1)
        one_hot = mx.arange(probs.shape[-1])[None, :] == t[:, None]
        return ((probs - one_hot) * c[:, None]).astype(logits.dtype)

    @nll.vjp
    def nll_vjp(primals, cotangent, _output):
        hidden, targets, params = primals
        d_hidden, d_params = [], [mx.zeros_like(p) for p in params]
        for a, b in spans(len(hidden)):
            h, t, c = hidden[a:b], targets[a:b], cotangent[a:b]
            d_logits = d_logits_of(head_fn(params, h), t, c)
            if linear and params:
                weight = params[0]
                d_hidden.append((d_logits @ weight).astype(h.dtype))
                d_params[0] = mx.addmm(d_params[0], d_logits.T, h.astype(d_logits.dtype))
                if len(params) > 1:
                    d_params[1] = d_params[1] + d_logits.sum(axis=0).astype(params[1].dtype)
                continue
            _, grads = mx.vjp(lambda x, *p: head_fn(list(p), x), [h, *params], [d_logits])
            d_hidden.append(grads[0])
            d_params = [acc + g for acc, g in zip(d_params, grads[1:])]
        d_h = mx.concatenate(d_hidden) if len(d_hidden) > 1 else d_hidden[0]
        return d_h, mx.zeros_like(targets), d_params

    return nll


@dataclass
class OutputHead:
    """How to run a model as body → hidden states → head, for models where that is exact."""

    tied: bool  # the head is the input embedding (as_linear)
    trainable: list[str]  # names of the head's trainable arrays ("weight", "bias")
    rows: int  # rows per chunk

    def body(self, model: nn.Module, inputs: mx.array, cache=None) -> mx.array:
        return model.model(inputs) if cache is None else model.model(inputs, cache)

    def module(self, model: nn.Module) -> nn.Module:
        return model.model.embed_tokens if self.tied else model.lm_head

    def params(self, model: nn.Module) -> list[mx.array]:
        module = self.module(model)
        return [getattr(module, name) for name in self.trainable]

    def head_fn(self, model: nn.Module) -> HeadFn:
        module = self.module(model)
        if is_frozen_small_head(module):
            return lambda _p, h: blocked_logits(module, h)
        if not self.trainable:
            return lambda _p, h: module.as_linear(h) if self.tied else module(h)
        names = self.trainable

        def apply(params: list[mx.array], h: mx.array) -> mx.array:
            given = dict(zip(names, params))
            out = h @ given["weight"].T
            return out + given["bias"] if "bias" in given else out

        return apply

    def nll(self, model: nn.Module, hidden: mx.array, targets: mx.array) -> mx.array:
        """Negative log-likelihood of `targets` at each row of `hidden` (N, D)."""
        module = self.module(model)
        if not self.trainable and is_frozen_small_head(module):
            return make_blocked_nll(module)(hidden, targets)
        # A trainable head is applied from its arrays as a plain matmul (see head_fn).
        nll = make_chunked_nll(self.head_fn(model), self.rows, linear=bool(self.trainable))
        return nll(hidden, targets, self.params(model))


def split_output_head(model: nn.Module) -> OutputHead | None:
    """The model's output head, if body + head reproduce the model's logits; else None."""
    body = getattr(model, "model", None)
    if not isinstance(body, nn.Module):
        return None
    head = getattr(model, "lm_head", None)
    tied = head is None
    module = getattr(body, "embed_tokens", None) if tied else head
    if not isinstance(module, nn.Module) or (tied and not hasattr(module, "as_linear")):
        return None
    trainable = [name for name, _ in tree_flatten(module.trainable_parameters())]
    # A trainable head is applied from its arrays, so it must be a plain matmul.
    if trainable and type(module) not in (nn.Linear, nn.Embedding):
        return None
    if trainable and not set(trainable) <= {"weight", "bias"}:
        return None
    vocab = _vocab_size(module)
    if vocab is None:
        return None
    split = OutputHead(tied=tied, trainable=trainable, rows=chunk_rows(vocab))
    return split if _reproduces_logits(model, split, vocab) else None


def _vocab_size(module: nn.Module) -> int | None:
    if isinstance(module, (nn.Embedding, nn.QuantizedEmbedding)):
        return int(module.weight.shape[0])
    if isinstance(module, (nn.Linear, nn.QuantizedLinear)):
        return int(module.weight.shape[0])
    return None


def _reproduces_logits(model: nn.Module, split: OutputHead, vocab: int) -> bool:
    """Body then head equal the model's own forward on a few tokens (in eval mode: no dropout)."""
    training = model.training
    model.eval()
    try:
        tokens = mx.array([[i * 7919 % vocab for i in range(1, 9)]], dtype=mx.int32)
        want = _own_logits(model, split, tokens)
        hidden = split.body(model, tokens)
        got = split.head_fn(model)(split.params(model), hidden)
        if want.shape != got.shape:
            return False
        ok = mx.allclose(want.astype(mx.float32), got.astype(mx.float32), rtol=1e-4, atol=1e-4)
        return bool(ok.item())
    except (AttributeError, TypeError, ValueError):
        return False
    finally:
        model.train(training)


def _own_logits(model: nn.Module, split: OutputHead, tokens: mx.array) -> mx.array:
    """The model's own forward. A tied head stored small multiplies a vocabulary block at
    a time meanwhile (its own as_linear would widen or dequantize it whole: with QLoRA's
    4-bit head that check was the job's lifetime peak); the check is of the model's
    structure (body, then the head, nothing after), which this leaves intact."""
    module = split.module(model)
    if not (split.tied and is_frozen_small_head(module)):
        logits = model(tokens)
        mx.eval(logits)
        return logits
    module.as_linear = lambda h: blocked_logits(module, h)  # shadows the class's method
    try:
        logits = model(tokens)
        mx.eval(logits)
        return logits
    finally:
        del module.as_linear
