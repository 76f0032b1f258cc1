"""Which tokens of a rendered conversation the loss trains on.

The conversation is rendered once with the chat template and tokenized with
character offsets. Each assistant turn's character span is found by rendering
the conversation up to that turn twice: with the generation prompt (where
the reply starts) and with the reply (where it ends, end-of-turn token
included, so the model learns to stop). A token is trained when it starts
inside a trained span. Working in characters, not token counts, keeps the
mask right even where BPE merges across a turn boundary.

Stand-in until `tunewire.datasets.masking` lands (the dataset helper owns that).
"""

from __future__ import annotations

MODES = ("all_assistant", "last_assistant", "all")


def trained_token_mask(tokenizer, messages: list[dict], mode: str, tools: list | None = None):
    """Returns (token_ids, mask) for one conversation; mask[i] is True if token i is trained."""
    if mode not in MODES:
        raise ValueError(f"loss masking mode must be one of {', '.join(MODES)}, got {mode!r}")
    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx-lm's wrapper holds the HF tokenizer
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]

    def render(upto: int, generation_prompt: bool) -> str:
        return hf.apply_chat_template(
            chat[:upto], tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    text = render(len(chat), False)
    encoded = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    if mode == "all":
        return ids, [True] * len(ids)

    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("trainable", True)]
    if mode == "last_assistant":
        turns = turns[-1:]
    spans = []
    for i in turns:
        through = render(i + 1, False)
        if not text.startswith(through):
            raise ValueError(
                "the chat template renders a conversation differently from its prefixes; "
                "per-turn loss masking needs a prefix-stable template (use loss_masking 'all')"
            )
        spans.append((len(render(i, True)), len(through)))
    mask = [any(s <= begin < e for s, e in spans) for begin, _ in offsets]
    return ids, mask
