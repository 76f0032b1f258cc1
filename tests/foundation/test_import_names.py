"""Our folders never shadow or get imported under bare names (DESIGN.md, "Import names")."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
FOLDER_NAMES = {"datasets", "trainer", "gateway"}
# Not our code: environments, generated and build output, local state.
SKIPPED_DIRS = {
    ".venv",
    "venv",
    "gen",
    "build",
    "dist",
    ".git",
    "node_modules",
    ".tunewire",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
}


def test_import_datasets_from_the_repo_root_finds_hugging_face():
    code = (
        "import datasets, json; print(json.dumps({'file': datasets.__file__, "
        "'load_dataset': hasattr(datasets, 'load_dataset')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["file"] is not None, "`datasets` resolved to a namespace package (our folder)"
    path = Path(found["file"]).resolve()
    assert "site-packages" in path.parts
    assert path.parent != REPO / "datasets"
    assert found["load_dataset"] is True


def python_files():
    for path in sorted(REPO.rglob("*.py")):
        if not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts[:-1]):
            yield path


def test_no_code_imports_our_folders_by_their_bare_names():
    offenders = []
    files = list(python_files())
    assert any(p.name == "tiny_model.py" for p in files)  # the walk does see our code
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in FOLDER_NAMES:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert offenders == [], "use tunewire.<name> instead:\n" + "\n".join(offenders)
