"""Which tokens of a chat-templated conversation the loss trains on.

The conversation is rendered prefix by prefix with the tokenizer's own chat
template: a trained message's tokens are those between the prefix before it
(with the generation prompt, so "<|im_start|>assistant\\n" stays untrained) and
the prefix that ends with it. Longest common prefixes make this hold for
templates that render a conversation's end differently. The training worker
uses `trained_token_mask` for its loss mask, and the dataset preview uses
`render_marked` to show the same spans, so what a user sees is what the loss sees.
No mlx here: the daemons import this too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The modes are the words of the proto's LossMasking (`tunewire.enum_words`; what a
# job's worker config carries), spelt out because this library imports no protobuf;
# a test keeps them equal. The short names the library took first still work.
LOSS_MASKING_WORDS = ("all_assistant_turns", "last_assistant_turn", "all_tokens")
_SHORT = dict(zip(("all_assistant", "last_assistant", "all"), LOSS_MASKING_WORDS))
MODES = (*LOSS_MASKING_WORDS, *_SHORT)
START_MARK, END_MARK = "<<<", ">>>"


def _plain(messages: Sequence[Mapping]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _trained_indices(messages: Sequence[Mapping], mode: str) -> list[int]:
    trained = [i for i, m in enumerate(messages) if m.get("trainable", m["role"] == "assistant")]
    return trained[-1:] if mode == "last_assistant_turn" else trained


def render_template(
    tokenizer: Any,
    messages: list[dict],
    tools: list | None,
    tokenize: bool,
    generation_prompt: bool,
):
    """The chat template applied to `messages`: token ids (a list) or text."""
    kwargs = {"tools": tools} if tools else {}
    if not messages and not generation_prompt:
        return [] if tokenize else ""
    out = tokenizer.apply_chat_template(
        messages,
        tokenize=tokenize,
        add_generation_prompt=generation_prompt,
        return_dict=False,
        **kwargs,
    )
    if tokenize and isinstance(out, Mapping):  # some versions return a BatchEncoding anyway
        out = out["input_ids"]
    return list(out) if tokenize else out


def _common_prefix(a: Sequence, b: Sequence) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _spans(tokenizer: Any, messages: Sequence[Mapping], tools, mode: str, tokenize: bool):
    """The whole rendering and the [start, end) spans of trained messages in it."""
    if mode not in MODES:
        raise ValueError(f"loss masking mode {mode!r} is not one of {', '.join(MODES)}")
    mode = _SHORT.get(mode, mode)
    plain = _plain(messages)
    full = render_template(tokenizer, plain, tools, tokenize, False)
    if mode == "all_tokens":
        return full, [(0, len(full))]
    spans = []
    for i in _trained_indices(messages, mode):
        before = render_template(tokenizer, plain[:i], tools, tokenize, True)
        upto = render_template(tokenizer, plain[: i + 1], tools, tokenize, False)
        start = _common_prefix(before, full)
        end = _common_prefix(upto, full)
        if end > start:
            spans.append((start, end))
    return full, spans


def trained_token_mask(
    tokenizer: Any,
    messages: Sequence[Mapping],
    mode: str = "all_assistant",
    tools: list | None = None,
) -> tuple[list[int], list[bool]]:
    """Token ids of the templated conversation and, per token, whether the loss trains on it.

    `messages` are canonical dicts (role, content, optional trainable; assistant
    turns train by default). `mode`: "all_assistant" (every trainable message),
    "last_assistant" (only the last one, as mlx-lm's mask_prompt) or "all".
    """
    ids, spans = _spans(tokenizer, messages, tools, mode, tokenize=True)
    mask = [False] * len(ids)
    for start, end in spans:
        mask[start:end] = [True] * (end - start)
    return ids, mask


def render_marked(
    tokenizer: Any,
    messages: Sequence[Mapping],
    mode: str = "all_assistant",
    tools: list | None = None,
) -> str:
    """The templated text with each trained span between START_MARK and END_MARK."""
    text, spans = _spans(tokenizer, messages, tools, mode, tokenize=False)
    pieces, at = [], 0
    for start, end in spans:
        pieces += [text[at:start], START_MARK, text[start:end], END_MARK]
        at = end
    pieces.append(text[at:])
    return "".join(pieces)
