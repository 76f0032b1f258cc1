"""Type-checks the typed modules with mypy: `python scripts/typecheck.py` (run by `make lint`).

The folders install under other import names (`trainer/` is `tunewire.trainer`,
`gen/tunewire/v1` is `tunewire.v1`, see DESIGN.md), which mypy cannot map by
itself; so this builds build/typecheck/tunewire/ of symbolic links in the
import layout and points mypy at it. The modules checked, and how strictly,
are in pyproject.toml (`[tool.mypy]`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mypy import api

REPO = Path(__file__).resolve().parent.parent
VIEW = REPO / "build" / "typecheck"
# Import name under tunewire/ → folder of the repository.
PARTS = {
    "trainer": "trainer",
    "gateway": "gateway",
    "datasets": "datasets",
    "v1": "gen/tunewire/v1",
}


def build_view() -> Path:
    shutil.rmtree(VIEW, ignore_errors=True)
    package = VIEW / "tunewire"
    package.mkdir(parents=True)
    for entry in (REPO / "tunewire").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, package / entry.name)
    for name, folder in PARTS.items():
        os.symlink(REPO / folder, package / name)
    return VIEW


def main() -> int:
    build_view()
    os.chdir(VIEW)  # mypy names files by the paths it is given: show the import layout
    out, err, status = api.run(["--config-file", str(REPO / "pyproject.toml")])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
