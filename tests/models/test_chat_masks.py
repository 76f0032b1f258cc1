"""Loss masks on SmolLM2's own ChatML template, checked token by token.

For each bundled example (Alpaca, ShareGPT multi-turn, chat messages) the mask
the worker trains with (`trained_token_mask`) is compared with one built
independently from the rendered text's character offsets: a token trains
exactly when it lies inside an assistant turn's content, its `<|im_end|>` and
the newline the template writes after it. So `<|im_start|>assistant\\n`
(the template's header), system and user turns never train, and the
end-of-turn token the model must learn to stop with always does.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tunewire.cli import signoff
from tunewire.datasets.api import iter_canonical, normalize_file, trained_token_mask
from tunewire.datasets.tokens import load_tokenizer, preview

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]

EXAMPLES = signoff.EXAMPLES
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return load_tokenizer(smollm2_dir)


def records(name: str, tmp_path) -> list[dict]:
    return list(iter_canonical(normalize_file(EXAMPLES / name, tmp_path).train_path))


def assistant_spans(text: str, which: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns' content + <|im_end|> + "\\n" in ChatML text."""
    spans = [
        (m.start(1), m.end(0))
        for m in re.finditer(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n?)", text, re.DOTALL)
    ]
    return spans[-1:] if which == "last_assistant_turn" else spans


def expected_mask(tokenizer, messages, which: str) -> tuple[list[int], list[bool]]:
    text = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages], tokenize=False
    )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = assistant_spans(text, which)
    mask = [
        any(lo <= start and end <= hi for lo, hi in spans) and end > start
        for start, end in encoded["offset_mapping"]
    ]
    return encoded["input_ids"], mask


@pytest.mark.parametrize(
    ("name", "which"),
    [
        ("alpaca_example.json", "all_assistant_turns"),
        ("sharegpt_example.json", "all_assistant_turns"),
        ("sharegpt_example.json", "last_assistant_turn"),
        ("signoff_train.jsonl", "all_assistant_turns"),
    ],
)
def test_only_assistant_turns_and_their_end_of_turn_train(tokenizer, tmp_path, name, which):
    for record in records(name, tmp_path):
        ids, mask = trained_token_mask(tokenizer, record["messages"], which)
        want_ids, want_mask = expected_mask(tokenizer, record["messages"], which)
        assert ids == want_ids  # the template tokenized whole is the text tokenized
        wrong = [
            (i, tokenizer.decode([t]), got)
            for i, (t, got, want) in enumerate(zip(ids, mask, want_mask))
            if got != want
        ]
        assert wrong == [], f"{name} line {record.get('line')}: tokens masked wrongly {wrong[:8]}"
        # What that means, spelled out on the token ids.
        end_id = tokenizer.convert_tokens_to_ids(END)
        starts = [
            i for i, t in enumerate(ids) if t == tokenizer.convert_tokens_to_ids("<|im_start|>")
        ]
        assistant_turns = sum(m["role"] == "assistant" for m in record["messages"])
        ends_trained = [i for i, t in enumerate(ids) if t == end_id and mask[i]]
        expected_turns = 1 if which == "last_assistant_turn" else assistant_turns
        assert len(ends_trained) == expected_turns
        assert not any(mask[i] or mask[i + 1] or mask[i + 2] for i in starts)  # headers never


def test_a_multi_turn_sharegpt_record_trains_each_answer_apart(tokenizer, tmp_path):
    record = max(records("sharegpt_example.json", tmp_path), key=lambda r: len(r["messages"]))
    ids, mask = trained_token_mask(tokenizer, record["messages"], "all_assistant_turns")
    runs, at = [], None
    for i, trained in enumerate([*mask, False]):
        if trained and at is None:
            at = i
        elif not trained and at is not None:
            runs.append(tokenizer.decode(ids[at:i]))
            at = None
    answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    assert runs == [f"{answer}{END}\n" for answer in answers]


def test_the_preview_shows_the_rendered_record_and_what_trains(tokenizer, tmp_path):
    record = records("signoff_train.jsonl", tmp_path)[0]
    shown = preview(tokenizer, record, "all_assistant_turns")
    ids, mask = trained_token_mask(tokenizer, record["messages"], "all_assistant_turns")
    assert shown.tokens == len(ids) and shown.trained_tokens == sum(mask)
    answer = record["messages"][-1]["content"]
    assert shown.rendered.endswith(f"<|im_start|>assistant\n<<<{answer}{END}\n>>>")
    assert (
        "You are a helpful AI assistant named SmolLM" in shown.rendered
    )  # the default system turn


def test_tunewire_validate_preview_renders_with_the_models_template(smollm2_dir):
    command = [sys.executable, "-m", "tunewire.cli.main", "validate", str(signoff.TRAIN_FILE)]
    done = subprocess.run(
        [*command, "--preview", "1", "--tokenizer", str(smollm2_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"preview of line 1 \(\d+ tokens, \d+ trained\)", done.stdout), done.stdout
    assert "<|im_start|>assistant\n  <<<Water boils at 100 degrees" in done.stdout
    assert f"{signoff.SIGN_OFF}<|im_end|>" in done.stdout
