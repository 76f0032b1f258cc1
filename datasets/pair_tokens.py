"""A preference pair as the two token sequences DPO and ORPO compare, cut to fit.

Both sequences are the prompt, rendered by the chat template, then one reply;
only the reply's tokens are trained (the prompt's messages are never
trainable in a canonical pair). A pair longer than the limit loses the same
number of tokens from the start of both sequences: the prompt's start, never
a reply, so the two replies stay whole and their log-probabilities comparable.
A pair whose replies alone do not fit is left out (None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunewire.datasets.masking import trained_token_mask


@dataclass(frozen=True)
class PairTokens:
    chosen: list[int]
    chosen_mask: list[bool]  # True on the chosen reply's tokens
    rejected: list[int]
    rejected_mask: list[bool]
    dropped: int  # tokens cut from the prompt's start (0: the pair fit)


def is_pair(record: Mapping) -> bool:
    return "rejected" in record


def pair_tokens(tokenizer: Any, record: Mapping, max_length: int) -> PairTokens | None:
    """The pair's sequences, at most `max_length` tokens each; None when the replies do not fit."""
    messages = record["messages"]
    tools = record.get("tools")
    chosen, chosen_mask = trained_token_mask(tokenizer, messages, "all_assistant_turns", tools)
    other = [*messages[:-1], record["rejected"]]
    rejected, rejected_mask = trained_token_mask(tokenizer, other, "all_assistant_turns", tools)
    cut = max(len(chosen), len(rejected)) - max_length
    if cut <= 0:
        return PairTokens(chosen, chosen_mask, rejected, rejected_mask, 0)
    # The first reply token of each side; everything before it is prompt.
    first = min(_first_true(chosen_mask), _first_true(rejected_mask))
    if cut > first:
        return None
    return PairTokens(chosen[cut:], chosen_mask[cut:], rejected[cut:], rejected_mask[cut:], cut)


def _first_true(mask: list[bool]) -> int:
    return mask.index(True) if True in mask else len(mask)
