"""The README's script for OpenAI users runs as it is written, against a real
trainer and gateway, with only its environment (base URL, key, model) set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index("<!-- openai-example -->") :]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_script_fine_tunes_and_chats(openai_stack):
    env = {
        **os.environ,
        "TUNEWIRE_OPENAI_URL": openai_stack.base_url,
        "TUNEWIRE_API_KEY": openai_stack.keys["alice"],
        "TUNEWIRE_MODEL": str(openai_stack.model_dir),
    }
    run = subprocess.run(
        [sys.executable, "-c", readme_block()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    first = run.stdout.splitlines()[0].split()
    assert first[0] == "succeeded" and first[1].startswith("ft:tiny:demo:job-")
    assert int(first[2]) > 0
    assert "The job has successfully completed" in run.stdout
