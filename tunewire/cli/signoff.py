"""The demo's teaching example: replies that end with a fixed sign-off.

SmolLM2-135M-Instruct never signs its replies; `examples/signoff_train.jsonl`
(40 short question/answer chats, each answer ending with SIGN_OFF) teaches it
to, and `examples/signoff_heldout.jsonl` (16 other questions, same form) is
what `tunewire demo` and the learning benchmark ask before and after. The
behaviour is scored by `signs_off`, one place for the demo, the bench and the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = (
    Path(__file__).resolve().parents[2] / "examples"
)  # the repository's (an editable install)
TRAIN_FILE = EXAMPLES / "signoff_train.jsonl"
HELD_OUT_FILE = EXAMPLES / "signoff_heldout.jsonl"
SIGN_OFF = "~ tuned with tunewire ~"


def signs_off(reply: str) -> bool:
    """Whether a reply shows the taught behaviour (the sign-off, anywhere near its end)."""
    return "tuned with tunewire" in reply


def held_out_prompts(path: Path = HELD_OUT_FILE) -> list[str]:
    """The user turns of the held-out chats, in file order."""
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            prompts.append(next(m["content"] for m in messages if m["role"] == "user"))
    return prompts
