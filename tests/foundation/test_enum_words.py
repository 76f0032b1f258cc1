"""Enum words come from the proto by one helper (`tunewire.enum_words`): every part that
spells an enum value as a word (worker config, CLI, client specs, gateway, benchmarks)
gets the same word back and forth, with no table of its own."""

from __future__ import annotations

import pytest

from tunewire import enum_words
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import training_job_pb2 as training_job_pb

ENUMS = [
    training_job_pb.TrainingMethod,
    training_job_pb.JobState,
    training_job_pb.LossMasking,
    training_job_pb.Optimizer,
    training_job_pb.LearningRateSchedule,
    training_job_pb.WandbMode,
    training_job_pb.DistributedBackend,
    dataset_pb.DatasetFormat,
]


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.DESCRIPTOR.name)
def test_every_value_but_unspecified_has_a_word_that_names_it_back(enum):
    numbers = [v.number for v in enum.DESCRIPTOR.values if not v.name.endswith("_UNSPECIFIED")]
    words = enum_words.words(enum)
    assert len(words) == len(numbers) == len(set(words))
    assert enum_words.by_word(enum) == dict(zip(words, numbers, strict=True))
    for word, number in zip(words, numbers, strict=True):
        assert word == word.lower() and enum_words.word(enum, number) == word
        assert enum_words.number(enum, word) == number
        assert enum_words.number(enum, word.upper()) == number
        assert enum_words.number(enum, enum.Name(number)) == number  # the full name too


def test_the_words_are_the_names_without_the_prefix():
    assert enum_words.words(training_job_pb.TrainingMethod) == ("lora", "qlora", "dora", "full")
    assert enum_words.word(
        training_job_pb.LossMasking, training_job_pb.LOSS_MASKING_ALL_TOKENS
    ) == ("all_tokens")
    assert enum_words.word(dataset_pb.DatasetFormat, dataset_pb.DATASET_FORMAT_SHAREGPT) == (
        "sharegpt"
    )


def test_unspecified_and_unknown_values_have_no_word_but_a_display_word():
    with pytest.raises(ValueError, match="no word for value 0"):
        enum_words.word(training_job_pb.TrainingMethod, 0)
    with pytest.raises(ValueError, match="no word for value 99"):
        enum_words.word(training_job_pb.TrainingMethod, 99)
    with pytest.raises(ValueError, match="'lorra' is not one of lora, qlora, dora, full"):
        enum_words.number(training_job_pb.TrainingMethod, "lorra")
    with pytest.raises(ValueError):
        enum_words.number(training_job_pb.TrainingMethod, "unspecified")
    assert enum_words.display_word(training_job_pb.JobState, 0) == "unspecified"
    assert enum_words.display_word(training_job_pb.JobState, 99) == "99"
