"""Fixtures of the dataset library's tests: a small real tokenizer with a ChatML template."""

from pathlib import Path

import pytest

from tunewire import tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The bundled tiny byte-level BPE tokenizer (ChatML template) in a model directory."""
    out = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.write_tokenizer_files(
        out, tiny_tokenizer.train_tokenizer(), model_max_length=2048
    )
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from tunewire.datasets.api import load_tokenizer

    return load_tokenizer(tokenizer_dir)
