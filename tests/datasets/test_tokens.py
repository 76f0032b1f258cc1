"""With a real tokenizer: trained-token masks, the marked preview, token counts and limits."""

import json

import pytest

from tunewire.datasets.api import (
    ValidationOptions,
    render_marked,
    trained_token_mask,
    validate_bytes,
)

pytestmark = pytest.mark.timeout(120)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a tensor?"},
    {"role": "assistant", "content": "An array with any number of axes."},
    {"role": "user", "content": "And a matrix?"},
    {"role": "assistant", "content": "A tensor with two axes."},
]


def trained_text(tokenizer, mode):
    ids, mask = trained_token_mask(tokenizer, CONVERSATION, mode)
    assert (
        len(ids)
        == len(mask)
        == len(tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False))
    )
    return tokenizer.decode([i for i, trained in zip(ids, mask) if trained])


def test_all_assistant_turns_are_trained_and_nothing_else(tokenizer):
    assert trained_text(tokenizer, "all_assistant") == (
        "An array with any number of axes.<|im_end|>\nA tensor with two axes.<|im_end|>\n"
    )


def test_last_assistant_turn_only(tokenizer):
    assert trained_text(tokenizer, "last_assistant") == "A tensor with two axes.<|im_end|>\n"


def test_all_tokens(tokenizer):
    ids, mask = trained_token_mask(tokenizer, CONVERSATION, "all")
    assert all(mask) and tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.")


def test_the_trainable_flag_decides_over_the_role(tokenizer):
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["trainable"] = False
    ids, mask = trained_token_mask(tokenizer, messages, "all_assistant")
    assert (
        tokenizer.decode([i for i, t in zip(ids, mask) if t])
        == "A tensor with two axes.<|im_end|>\n"
    )


def test_an_unknown_mode_is_refused(tokenizer):
    with pytest.raises(ValueError, match="all_assistant"):
        trained_token_mask(tokenizer, CONVERSATION, "assistant")


def test_the_preview_marks_exactly_the_trained_text(tokenizer):
    text = render_marked(tokenizer, CONVERSATION)
    assert text.count("<<<") == text.count(">>>") == 2
    assert "<|im_start|>assistant\n<<<An array with any number of axes.<|im_end|>\n>>>" in text
    assert text.replace("<<<", "").replace(">>>", "") == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )


def test_validation_with_a_tokenizer_counts_tokens_and_previews(tokenizer_dir, tokenizer):
    record = {
        "conversations": [
            {"from": "human", "value": "What is a tensor?"},
            {"from": "gpt", "value": "An array with any number of axes."},
        ]
    }
    long_record = {"instruction": "Repeat.", "output": "tensor " * 300}
    data = (json.dumps(record) + "\n").encode()
    report = validate_bytes(data, ValidationOptions(tokenizer=tokenizer_dir, preview_records=1))
    (preview,) = report.sample_preview
    assert preview.rendered.count("<<<") == 1 and "What is a tensor?" in preview.rendered
    assert 0 < preview.trained_tokens < preview.tokens == report.statistics.tokens
    data = (
        json.dumps({"instruction": "Say it.", "output": "Yes, it is."})
        + "\n"
        + json.dumps(long_record)
    ).encode()
    report = validate_bytes(data, ValidationOptions(tokenizer=tokenizer, max_tokens=100))
    assert report.valid and [(w.line, w.code) for w in report.warnings] == [(2, "TOO_MANY_TOKENS")]
    assert "max_tokens 100" in report.warnings[0].message


def test_a_chat_template_that_refuses_a_record_makes_it_invalid(tokenizer):
    class Strict:
        chat_template = "strict"

        def apply_chat_template(self, messages, **kwargs):
            if any("forbidden" in m["content"] for m in messages):
                raise ValueError("this template refuses the word")
            return tokenizer.apply_chat_template(messages, **kwargs)

    data = (
        json.dumps({"instruction": "Say forbidden.", "output": "No."})
        + "\n"
        + json.dumps({"instruction": "Say hi.", "output": "Hi!"})
    ).encode()
    report = validate_bytes(data, ValidationOptions(tokenizer=Strict()))
    assert [(e.line, e.code) for e in report.errors] == [(1, "TEMPLATE_ERROR")]
    assert "refuses the word" in report.errors[0].message and report.valid_samples == 1


def test_a_directory_without_a_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load a tokenizer"):
        validate_bytes(b"{}", ValidationOptions(tokenizer=tmp_path))
