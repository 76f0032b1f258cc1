"""`tunewire`: the command line. Each subcommand lives in its own module,
imported only when it runs, so `tunewire model ...` never pays for grpc or mlx.

    tunewire model tiny DIR      build the bundled tiny model (see tunewire.cli.model)
"""

from __future__ import annotations

import importlib
import sys

# Subcommand name -> (module, function taking argv and returning an exit status).
COMMANDS = {
    "model": ("tunewire.cli.model", "run_model"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tunewire: error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
