"""Preference pairs: both formats detected, each problem with its line, field and code,
one canonical form, and the two token sequences cut from the prompt's start."""

import json

import pytest

from tunewire.datasets.api import (
    DatasetFormat,
    ValidationOptions,
    iter_canonical,
    normalize_file,
    pair_tokens,
    report_to_proto,
    validate_bytes,
)
from tunewire.v1 import dataset_pb2 as dataset_pb

pytestmark = pytest.mark.timeout(60)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def openai_pair(prompt="What is 2+2?", chosen="It is 4.", rejected="Let me think: it is 4."):
    return {
        "input": {"messages": [user(prompt)]},
        "preferred_output": [assistant(chosen)],
        "non_preferred_output": [assistant(rejected)],
    }


def jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode() + b"\n"


def validate(*records, **options):
    return validate_bytes(jsonl(*records), ValidationOptions(**options))


def issues(report):
    return [(i.line, i.field, i.code) for i in report.errors + report.warnings]


CANONICAL = {
    "messages": [
        {"role": "system", "content": "Be brief.", "trainable": False},
        {"role": "user", "content": "What is 2+2?", "trainable": False},
        {"role": "assistant", "content": "It is 4.", "trainable": True},
    ],
    "line": 1,
    "rejected": {"role": "assistant", "content": "Let me think: it is 4.", "trainable": True},
}


@pytest.mark.parametrize(
    "record, found",
    [
        (
            {
                "input": {
                    "messages": [{"role": "system", "content": "Be brief."}, user("What is 2+2?")]
                },
                "preferred_output": [assistant("It is 4.")],
                "non_preferred_output": [assistant("Let me think: it is 4.")],
            },
            DatasetFormat.OPENAI_PREFERENCE,
        ),
        (
            {
                "system": "Be brief.",
                "prompt": "What is 2+2?",
                "chosen": "It is 4.",
                "rejected": "Let me think: it is 4.",
            },
            DatasetFormat.CHOSEN_REJECTED,
        ),
        (
            {
                "prompt": [{"role": "system", "content": "Be brief."}, user("What is 2+2?")],
                "chosen": [assistant("It is 4.")],
                "rejected": [assistant("Let me think: it is 4.")],
            },
            DatasetFormat.CHOSEN_REJECTED,
        ),
        (  # TRL's implicit prompt: whole conversations sharing all but the last message
            {
                "chosen": [
                    {"role": "system", "content": "Be brief."},
                    user("What is 2+2?"),
                    assistant("It is 4."),
                ],
                "rejected": [
                    {"role": "system", "content": "Be brief."},
                    user("What is 2+2?"),
                    assistant("Let me think: it is 4."),
                ],
            },
            DatasetFormat.CHOSEN_REJECTED,
        ),
    ],
)
def test_every_shape_is_detected_and_normalized_to_one_canonical_pair(record, found):
    report = validate(record)
    assert report.valid and report.format is found and report.format.is_preference
    assert issues(report) == []
    assert report.sample_preview[0].conversation == CANONICAL


def test_earlier_assistant_turns_of_the_prompt_are_not_trained():
    report = validate(
        {
            "prompt": [user("Hi"), assistant("Hello!"), user("And 2+2?")],
            "chosen": "It is 4.",
            "rejected": "Four, I believe.",
        }
    )
    flags = [m["trainable"] for m in report.sample_preview[0].conversation["messages"]]
    assert report.valid and flags == [False, False, False, True]


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"prompt": "hi", "chosen": "a reply"}, [(1, "rejected", "MISSING_FIELD")]),
        ({"prompt": "hi", "chosen": "  ", "rejected": "b reply"}, [(1, "chosen", "EMPTY_VALUE")]),
        ({"prompt": "hi", "chosen": 3, "rejected": "b reply"}, [(1, "chosen", "WRONG_TYPE")]),
        ({"prompt": "hi", "chosen": [], "rejected": "b reply"}, [(1, "chosen", "EMPTY_VALUE")]),
        ({"chosen": "a reply", "rejected": "b reply"}, [(1, "prompt", "MISSING_FIELD")]),
        (
            {"prompt": [user("hi"), assistant("yes?")], "chosen": "a reply", "rejected": "b reply"},
            [(1, "prompt[1].role", "PROMPT_NOT_ENDING_ON_USER")],
        ),
        (
            {"prompt": "hi", "chosen": [user("not a reply")], "rejected": "b reply"},
            [(1, "chosen[0].role", "NOT_ASSISTANT_REPLY")],
        ),
        (
            {"prompt": "hi", "chosen": [assistant("one"), assistant("two")], "rejected": "b reply"},
            [(1, "chosen", "NOT_ASSISTANT_REPLY")],
        ),
        (
            {"prompt": [{"role": "human", "content": "hi"}], "chosen": "a reply", "rejected": "b"},
            [(1, "prompt[0].role", "UNKNOWN_ROLE")],
        ),
        (
            {"prompt": [user("hi"), user("again")], "chosen": "a reply", "rejected": "b reply"},
            [(1, "prompt[1].role", "NOT_ALTERNATING")],
        ),
        (
            {"prompt": [{"role": "user"}], "chosen": "a reply", "rejected": "b reply"},
            [(1, "prompt[0].content", "MISSING_FIELD")],
        ),
        (
            {"system": 5, "prompt": "hi", "chosen": "a reply", "rejected": "b reply"},
            [(1, "system", "WRONG_TYPE")],
        ),
        (
            {
                "chosen": [user("q"), assistant("a reply")],
                "rejected": [user("other q"), assistant("b reply")],
            },
            [(1, "prompt", "MISSING_FIELD")],
        ),
        (
            {
                "input": "hi",
                "preferred_output": [assistant("a reply")],
                "non_preferred_output": [assistant("b reply")],
            },
            [(1, "input", "WRONG_TYPE")],
        ),
        (
            {"input": {"messages": [user("hi")]}, "preferred_output": [assistant("a reply")]},
            [(1, "non_preferred_output", "MISSING_FIELD")],
        ),
        (
            {
                "input": {"messages": [user("hi")]},
                "preferred_output": "a reply",
                "non_preferred_output": [assistant("b")],
            },
            [(1, "preferred_output", "WRONG_TYPE")],
        ),
        (
            {
                "input": {"messages": [user("hi"), assistant("x")]},
                "preferred_output": [assistant("a reply")],
                "non_preferred_output": [assistant("b reply")],
            },
            [(1, "input.messages[1].role", "PROMPT_NOT_ENDING_ON_USER")],
        ),
        (
            {
                "input": {"messages": [user("")]},
                "preferred_output": [{"role": "user", "content": "a reply"}],
                "non_preferred_output": [assistant("b reply")],
            },
            [
                (1, "input.messages[0].content", "EMPTY_VALUE"),
                (1, "preferred_output[0].role", "NOT_ASSISTANT_REPLY"),
            ],
        ),
        (
            {
                "input": {"messages": [user("hi")], "tools": 3},
                "preferred_output": [assistant("a reply")],
                "non_preferred_output": [assistant("b reply")],
            },
            [(1, "input.tools", "WRONG_TYPE")],
        ),
    ],
)
def test_each_problem_names_its_line_field_and_code(record, expected):
    good = (
        openai_pair()
        if "input" in record
        else {"prompt": "Hi?", "chosen": "Hi.", "rejected": "Hey!"}
    )
    report = validate(good, record)
    assert not report.valid
    assert issues(report) == [(2, field, code) for _, field, code in expected]
    assert report.valid_samples == 1


def test_identical_replies_and_unknown_fields_are_warnings_and_the_file_stays_valid():
    report = validate(
        {"prompt": "hi", "chosen": "Same reply.", "rejected": " Same reply.", "score": 3},
        openai_pair(),
    )
    assert report.valid is False  # mixed formats
    report = validate(
        {"prompt": "hi", "chosen": "Same reply.", "rejected": " Same reply.", "score": 3},
        {"prompt": "hi", "chosen": "One reply.", "rejected": "Another.", "score": 1},
    )
    assert report.valid and report.valid_samples == 2
    assert sorted(issues(report)) == [
        (1, "chosen", "IDENTICAL_REPLIES"),
        (1, "score", "UNKNOWN_FIELD"),
    ]


def test_a_file_mixing_the_two_preference_formats_or_pairs_and_chat_is_an_error():
    report = validate({"prompt": "hi", "chosen": "a reply", "rejected": "b reply"}, openai_pair())
    assert issues(report) == [(2, "preferred_output", "MIXED_FORMATS")]
    report = validate(openai_pair(), {"messages": [user("hi"), assistant("a reply")]})
    assert issues(report) == [(2, "messages", "MIXED_FORMATS")]


def test_json_errors_keep_their_line():
    report = validate(openai_pair(), '{"prompt": "hi", "chosen": ', openai_pair("Other?"))
    assert [(i.line, i.code) for i in report.errors] == [(2, "INVALID_JSON")]
    assert report.valid_samples == 2


def test_pairs_differing_only_in_the_rejected_reply_are_not_duplicates():
    report = validate(
        openai_pair(rejected="Long answer one."),
        openai_pair(rejected="Long answer two."),
        openai_pair(rejected="Long answer two."),
    )
    assert issues(report) == [(3, "", "DUPLICATE_RECORD")]


def test_normalize_writes_canonical_pairs_that_read_back(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_bytes(jsonl(*(openai_pair(f"Question {i}?") for i in range(10))))
    result = normalize_file(source, tmp_path / "out", validation_fraction=0.3, seed=1)
    records = list(iter_canonical(result.train_path)) + list(iter_canonical(result.validation_path))
    assert sorted(r["line"] for r in records) == list(range(1, 11))
    assert all(r["rejected"]["content"] == "Let me think: it is 4." for r in records)
    assert 0 < result.statistics.validation_records < 10


def test_the_report_proto_carries_the_rejected_reply():
    message = report_to_proto(validate(openai_pair()))
    conversation = message.sample_preview[0].conversation
    assert message.format == dataset_pb.DATASET_FORMAT_OPENAI_PREFERENCE
    assert conversation.messages[-1].content == "It is 4."
    assert conversation.rejected.role == "assistant"
    assert conversation.rejected.content == "Let me think: it is 4."


# --- With a tokenizer ----------------------------------------------------------------------


def canonical(prompt, chosen, rejected):
    return {
        "messages": [
            {"role": "user", "content": prompt, "trainable": False},
            {"role": "assistant", "content": chosen, "trainable": True},
        ],
        "rejected": {"role": "assistant", "content": rejected, "trainable": True},
    }


def trained(tokenizer, ids, mask):
    return tokenizer.decode([i for i, m in zip(ids, mask) if m])


def test_only_each_sides_reply_tokens_are_trained(tokenizer):
    pair = pair_tokens(tokenizer, canonical("Say hi.", "Hi.", "Hello there, friend."), 512)
    assert pair.dropped == 0
    assert trained(tokenizer, pair.chosen, pair.chosen_mask) == "Hi.<|im_end|>\n"
    assert (
        trained(tokenizer, pair.rejected, pair.rejected_mask) == "Hello there, friend.<|im_end|>\n"
    )
    # The same prompt tokens before each reply.
    start = pair.chosen_mask.index(True)
    assert pair.chosen[:start] == pair.rejected[:start] and pair.rejected_mask.index(True) == start


def test_an_overlong_pair_loses_the_prompts_start_never_a_reply(tokenizer):
    record = canonical("word " * 200 + "the end?", "Hi.", "Hello there, friend.")
    whole = pair_tokens(tokenizer, record, 4096)
    cut = pair_tokens(tokenizer, record, 64)
    assert max(len(cut.chosen), len(cut.rejected)) == 64
    assert cut.dropped == len(whole.rejected) - 64
    assert (
        cut.chosen == whole.chosen[cut.dropped :] and cut.rejected == whole.rejected[cut.dropped :]
    )
    assert trained(tokenizer, cut.rejected, cut.rejected_mask) == "Hello there, friend.<|im_end|>\n"
    assert "the end?" in tokenizer.decode(cut.chosen)


def test_a_pair_whose_reply_alone_does_not_fit_is_left_out(tokenizer):
    assert pair_tokens(tokenizer, canonical("Hi?", "ok", "word " * 100), 32) is None


def test_validation_counts_both_sequences_and_warns_of_the_cut(tokenizer):
    long_prompt = "word " * 100
    report = validate(
        {"prompt": long_prompt, "chosen": "Hi.", "rejected": "Hello there."},
        tokenizer=tokenizer,
        max_tokens=50,
    )
    (warning,) = report.warnings
    assert warning.code == "TOO_MANY_TOKENS" and "prompt's first tokens" in warning.message
    pair = pair_tokens(tokenizer, canonical(long_prompt, "Hi.", "Hello there."), 4096)
    assert report.statistics.tokens == len(pair.chosen) + len(pair.rejected)
