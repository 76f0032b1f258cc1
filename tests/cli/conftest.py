"""Fixtures of the CLI tests: real trainer and gateway processes on free ports,
a working directory holding the bundled example datasets, and the tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .services import Services

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_dir) -> Services:
    """Trainer and gateway, shared by one test module (starting them takes seconds)."""
    root = tmp_path_factory.mktemp("cli")
    for name in ("alpaca_example.json", "sharegpt_example.json"):
        shutil.copy(EXAMPLES / name, root / name)
    stack = Services(root, model_root=tiny_model_dir.parent)
    try:
        stack.start_trainer()
        stack.start_gateway()
        yield stack
    finally:
        stack.close()
