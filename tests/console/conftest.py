"""Fixtures of the console tests: the gateway tests' real trainer and gateway on
port 0 (alice and bob members, root admin)."""

from __future__ import annotations

import pytest

from ..gateway.conftest import start_stack


@pytest.fixture
async def stack(tmp_path, tiny_model_dir):
    s = await start_stack(tmp_path, tiny_model_dir)
    yield s
    await s.close()
