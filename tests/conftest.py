"""Fixtures shared by every area's tests. Keep this small; area-specific
fixtures live next to the tests that use them."""

from pathlib import Path

import pytest

from tunewire.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The bundled tiny Llama (seed 0, float32), built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)
