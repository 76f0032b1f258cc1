"""Tokenizers for token counts and previews, loaded only when asked for.

`transformers` takes seconds to import, so nothing here imports it until a
tokenizer is requested; validation without one never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tunewire.datasets.masking import render_marked, render_template, trained_token_mask
from tunewire.datasets.report import RecordPreview


def load_tokenizer(source: Any) -> Any:
    """A tokenizer with a chat template, from a model directory (or hub id) or already loaded."""
    if isinstance(source, (str, os.PathLike)):
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency of mlx-lm
            raise ValueError("counting tokens needs the `transformers` package") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(source))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load a tokenizer from {os.fspath(source)!r}: {exc}") from exc
    else:
        tokenizer = source
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer from {source!r} has no chat template")
    return tokenizer


def count_tokens(tokenizer: Any, messages: Sequence[dict], tools: list | None = None) -> int:
    """Tokens of the conversation after the chat template."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return len(render_template(tokenizer, plain, tools, tokenize=True, generation_prompt=False))


def preview(tokenizer: Any, record: dict, mode: str = "all_assistant") -> RecordPreview:
    """A canonical record with its rendering (trained spans marked) and token counts."""
    messages, tools = record["messages"], record.get("tools")
    if tokenizer is None:
        return RecordPreview(conversation=record)
    ids, mask = trained_token_mask(tokenizer, messages, mode, tools)
    return RecordPreview(
        conversation=record,
        rendered=render_marked(tokenizer, messages, mode, tools),
        tokens=len(ids),
        trained_tokens=sum(mask),
    )
