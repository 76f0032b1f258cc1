"""`tunewire model`: build random models offline, import real ones from GGUF.

    tunewire model tiny DIR [--seed N] [--preset NAME] [--dtype DTYPE] [--force]
    tunewire model presets
    tunewire model import SOURCE.gguf DIR [--dtype DTYPE] [--force]
    tunewire model smollm2 [DIR] [--dtype DTYPE]
    python -m tunewire.cli.model tiny DIR

`tiny` imports numpy and tokenizers only (never mlx), so it starts fast;
`import` and `smollm2` (tunewire/models/commands.py) load mlx when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tunewire import tiny_model, tiny_tokenizer
from tunewire.models.commands import add_commands as add_import_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunewire model", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tiny = commands.add_parser(
        "tiny",
        help="build a random model with a bundled tokenizer (Hugging Face layout)",
        description="Build a random model that mlx_lm.load reads like any other. "
        "The same seed gives byte-identical files.",
    )
    tiny.add_argument("dir", metavar="DIR", help="output directory (created if missing)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    tiny.add_argument(
        "--preset",
        default="tiny",
        choices=list(tiny_model.PRESETS),
        help="architecture and shape (default: tiny); the others are real models' shapes",
    )
    tiny.add_argument(
        "--dtype",
        default="float32",
        choices=list(tiny_model.DTYPES),
        help="weight dtype on disk (default: float32)",
    )
    tiny.add_argument("--force", action="store_true", help="replace the model in a non-empty DIR")

    commands.add_parser("presets", help="list the presets with their parameter counts")
    add_import_commands(commands)
    return parser


def run_model(argv: list[str]) -> int:
    """Entry point of `tunewire model ...`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error (or --help)
        return int(exit_.code or 0)
    try:
        if args.command == "presets":
            return _list_presets()
        if hasattr(args, "run"):
            return args.run(args)
        return _build(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"tunewire model: error: {error}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = tiny_model.build_tiny_model(
        args.dir, seed=args.seed, preset=args.preset, dtype=args.dtype, overwrite=args.force
    )
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    parameters = tiny_model.parameter_count(tiny_model.PRESETS[args.preset], vocab)
    size = (out / "model.safetensors").stat().st_size
    print(
        f"built {args.preset} model in {out}: {parameters:,} parameters, vocabulary {vocab:,}, "
        f"{args.dtype}, {size / 2**20:,.1f} MiB, in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _list_presets() -> int:
    vocab = tiny_tokenizer.train_tokenizer().get_vocab_size()
    print(
        f"{'preset':<14} {'architecture':<18} {'parameters':>15} {'layers':>6} {'hidden':>6} {'vocab':>7}"
    )
    for name, preset in tiny_model.PRESETS.items():
        print(
            f"{name:<14} {preset.architecture:<18} "
            f"{tiny_model.parameter_count(preset, vocab):>15,} {preset.num_hidden_layers:>6} "
            f"{preset.hidden_size:>6} {preset.vocab_size or vocab:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_model(sys.argv[1:]))
