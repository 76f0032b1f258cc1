"""`tunewire`: fine-tune language models on MLX, from the command line.

Services
  server                  trainer + gateway in the foreground (Ctrl-C stops both)
  trainer | gateway       one of them alone (the daemons' own flags)
  keys create NAME        an API key for the gateway
  admin backup FILE       an online backup of the trainer's database (admin restore FILE)
Data
  validate FILE           check a dataset locally (--remote: through the server)
  datasets upload|list|show
  adapters upload DIR     an adapter folder to start jobs from (initial_adapter.adapter_id)
Jobs
  train CONFIG.yaml       start a job (job-spec or mlx_lm.lora YAML keys); --watch to follow it
  jobs [show|cancel JOB]  list, inspect, cancel
  watch JOB               live progress bar; --json for one event per line
  checkpoints JOB         a job's checkpoints and losses
  logs JOB                a job's log (what its worker printed); --follow, --tail N
  plot JOB -o loss.png    training and validation loss against step
  generate JOB "prompt"   a reply from the fine-tuned model
  download JOB [-o DIR]   the adapter (or --checkpoint N, --model) onto this machine
  export JOB --format F -o PATH  gguf-adapter (llama.cpp, Ollama), gguf (merged) or mlx (fused)
Other
  info                    the server's version, device and features
  model tiny DIR          build the bundled tiny model (tests, demos)
  demo                    what `make run` shows: SmolLM2 learns a sign-off, live, before/after
  e2e [--url URL]         the seed's end-to-end suite against a running server (--report FILE)

Global flags (before or after the command): --address HOST:PORT (default
$TUNEWIRE_ADDRESS or localhost:50051), --api-key KEY (default $TUNEWIRE_API_KEY),
--verbose. `tunewire COMMAND --help` for each command's flags.
"""

from __future__ import annotations

import importlib
import sys

# Subcommand -> (module, function taking argv and returning an exit status).
# Modules are imported only when their command runs, so `tunewire model ...`
# never pays for grpc and nothing here imports mlx.
COMMANDS = {
    "server": ("tunewire.cli.server", "run_server"),
    "trainer": ("tunewire.cli.server", "run_trainer"),
    "gateway": ("tunewire.cli.server", "run_gateway"),
    "keys": ("tunewire.cli.keys", "run_keys"),
    "admin": ("tunewire.cli.admin", "run_admin"),
    "validate": ("tunewire.cli.validate_remote", "run"),
    "datasets": ("tunewire.cli.datasets", "run_datasets"),
    "adapters": ("tunewire.cli.adapters", "run_adapters"),
    "train": ("tunewire.cli.train", "run_train"),
    "jobs": ("tunewire.cli.jobs", "run_jobs"),
    "watch": ("tunewire.cli.watch", "run_watch"),
    "checkpoints": ("tunewire.cli.jobs", "run_checkpoints"),
    "logs": ("tunewire.cli.logs", "run_logs"),
    "plot": ("tunewire.cli.plot", "run_plot"),
    "generate": ("tunewire.cli.generate", "run_generate"),
    "download": ("tunewire.cli.download", "run_download"),
    "export": ("tunewire.cli.export", "run_export"),
    "info": ("tunewire.cli.info", "run_info"),
    "model": ("tunewire.cli.model", "run_model"),
    "demo": ("tunewire.cli.demo", "run_demo"),
    "e2e": ("tunewire.cli.e2e", "run_e2e"),
}
# Commands that talk to a server and take the global flags.
CLIENT_COMMANDS = {
    "datasets",
    "adapters",
    "train",
    "jobs",
    "watch",
    "checkpoints",
    "logs",
    "plot",
    "generate",
    "download",
    "export",
    "info",
    "validate",
}
GLOBAL_WITH_VALUE = ("--address", "--api-key")
GLOBAL_SWITCHES = ("-v", "--verbose")


def split_global_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(global flags given before the command, the rest starting with the command)."""
    flags: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE:
            take = 1 if "=" in arg else 2
            if i + take > len(argv):
                raise ValueError(f"{name} needs a value")
            flags += argv[i : i + take]
            i += take
        elif arg in GLOBAL_SWITCHES:
            flags.append(arg)
            i += 1
        else:
            break
    return flags, argv[i:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, rest = split_global_flags(argv)
    except ValueError as exc:
        print(f"tunewire: {exc}", file=sys.stderr)
        return 2
    if not rest or rest[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0 if rest else 2
    name, rest = rest[0], rest[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = (
            f"; did you mean {close[0]!r}?" if close else f"; choose one of: {', '.join(COMMANDS)}"
        )
        print(f"tunewire: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    if flags:
        if name not in CLIENT_COMMANDS:
            print(
                f"tunewire: {' '.join(flags)} apply to commands that call a server; `tunewire {name}` takes none",
                file=sys.stderr,
            )
            return 2
        if name == "validate" and "--remote" not in rest:
            rest = [*rest, "--remote"]  # a server address only makes sense for remote validation
        rest = [*rest, *flags]
    module, function = COMMANDS[name]
    try:
        return getattr(importlib.import_module(module), function)(rest)
    except KeyboardInterrupt:
        print(f"\ntunewire {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
