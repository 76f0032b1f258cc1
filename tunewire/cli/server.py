"""`tunewire server`: the trainer and the gateway together, in the foreground.

    tunewire server [--home DIR] [--grpc-listen ADDR] [--http-listen ADDR] [--trainer-listen ADDR]
                    [--keys FILE] [--data-root DIR ...] [--model-root DIR ...] [--max-running-jobs N] [--no-dev-key]
    tunewire trainer ...     the trainer daemon alone (tunewire-trainer's flags)
    tunewire gateway ...     the gateway alone (tunewire-gateway's flags)

Both run in this one process and event loop; Ctrl-C (or SIGTERM) stops the
gateway, lets running jobs checkpoint, and stops the trainer (they resume at
the next start). A second Ctrl-C stops at once.

Keys: the gateway accepts the keys of the keys file and TUNEWIRE_API_KEY /
MLX_TRAINING_API_KEY. When there are none and every address is on loopback,
a development key is made (random, kept in $TUNEWIRE_HOME/dev-key, mode 0600)
so that a first session works without set-up; `tunewire` commands on this
machine find it by themselves. It is never made for a server other hosts can reach.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewire import addresses
from tunewire.addresses import is_local_only
from tunewire.client.dev_key import dev_key_path, ensure_dev_key, remove_dev_key
from tunewire.identity import API_KEY_ENV_VARIABLES, INTERNAL_TOKEN_ENV

PROG = "tunewire server"
STOP_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class ServerOptions:
    home: Path
    grpc_listen: str
    http_listen: str
    trainer_listen: str
    keys_file: Path
    data_roots: tuple[Path, ...]
    max_running_jobs: int
    dev_key: bool
    cors_origins: tuple[str, ...] = ()
    model_roots: tuple[Path, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="state directory (default $TUNEWIRE_HOME or ./.tunewire)",
    )
    parser.add_argument(
        "--grpc-listen",
        default=env.get("TUNEWIRE_GRPC_LISTEN", addresses.DEFAULT_GATEWAY_GRPC),
        help="gateway gRPC address (default $TUNEWIRE_GRPC_LISTEN or %(default)s)",
    )
    parser.add_argument(
        "--http-listen",
        default=env.get("TUNEWIRE_HTTP_LISTEN", addresses.DEFAULT_GATEWAY_HTTP),
        help="gateway HTTP address (default $TUNEWIRE_HTTP_LISTEN or %(default)s)",
    )
    parser.add_argument(
        "--trainer-listen",
        default=env.get("TUNEWIRE_TRAINER_LISTEN", addresses.DEFAULT_TRAINER),
        help="trainer address, loopback or unix socket (default $TUNEWIRE_TRAINER_LISTEN or %(default)s)",
    )
    parser.add_argument(
        "--keys", type=Path, default=None, help="keys file (default $TUNEWIRE_HOME/keys.yaml)"
    )
    parser.add_argument(
        "--data-root",
        action="append",
        type=Path,
        default=[],
        help="directory whose files jobs may read by path (repeatable; default: here, "
        "never the home)",
    )
    parser.add_argument(
        "--model-root",
        action="append",
        type=Path,
        default=[],
        help="directory whose model folders jobs may load (repeatable; always: HOME/models "
        "and the Hugging Face cache)",
    )
    parser.add_argument(
        "--max-running-jobs", type=int, default=1, help="jobs training at once (default 1)"
    )
    parser.add_argument("--no-dev-key", action="store_true", help="never make a development key")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of ORIGIN call the HTTP API cross-origin (repeatable; default none)",
    )
    return parser


def run_server(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    home = (args.home or Path(os.environ.get("TUNEWIRE_HOME") or ".tunewire")).resolve()
    options = ServerOptions(
        home=home,
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        trainer_listen=args.trainer_listen,
        keys_file=(args.keys or home / "keys.yaml").resolve(),
        data_roots=tuple(p.resolve() for p in args.data_root),
        model_roots=tuple(p.resolve() for p in args.model_root),
        max_running_jobs=args.max_running_jobs,
        dev_key=not args.no_dev_key,
        cors_origins=tuple(args.cors_origin),
    )
    if options.max_running_jobs < 1:
        return _fail(f"--max-running-jobs must be at least 1, got {options.max_running_jobs}")
    busy = busy_ports(options)
    if busy:
        return _fail(
            f"cannot start: {busy}; another `tunewire server` may be running (stop it), or choose other "
            "addresses with --grpc-listen / --http-listen / --trainer-listen"
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from tunewire.gateway.keys import KeysFileError
    from tunewire.gateway.server import ListenError
    from tunewire.trainer.server import ConfigError

    try:
        asyncio.run(serve(options))
    except (ConfigError, ListenError, KeysFileError) as exc:
        return _fail(f"cannot start: {exc}")
    except KeyboardInterrupt:  # the second Ctrl-C
        print(
            f"{PROG}: stopped at once; running jobs resume from their last checkpoint at the next start",
            file=sys.stderr,
        )
        return 130
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def busy_ports(options: ServerOptions) -> str:
    """'port 50051 (gateway gRPC) is in use, ...' for addresses that cannot be bound, else ''."""
    problems = []
    for address, role in (
        (options.grpc_listen, "gateway gRPC"),
        (options.http_listen, "gateway HTTP"),
        (options.trainer_listen, "trainer"),
    ):
        if address == "unix":  # the trainer's socket in the home
            continue
        try:
            parsed = addresses.parse(address)
        except addresses.AddressError as exc:
            problems.append(f"{role}: {exc}")
            continue
        if parsed.is_unix or parsed.port == 0:
            continue
        with socket.socket(parsed.family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((parsed.bind_host, parsed.port))
            except OSError as exc:
                why = (
                    "is in use"
                    if exc.errno == errno.EADDRINUSE
                    else f"cannot be used ({exc.strerror})"
                )
                problems.append(f"{address} ({role}) {why}")
    return ", ".join(problems)


def choose_keys(options: ServerOptions, environ=os.environ) -> tuple[tuple[str, ...], str]:
    """(admin keys for the gateway, the development key or '')."""
    from tunewire.gateway.keys import read_keys_file

    env_keys = tuple(
        environ[v].strip() for v in API_KEY_ENV_VARIABLES if environ.get(v, "").strip()
    )
    has_file_keys = bool(read_keys_file(options.keys_file))
    if env_keys or has_file_keys or not options.dev_key:
        remove_dev_key(options.home)  # clients must not keep sending a key nobody accepts
        return env_keys, ""
    if not (is_local_only(options.grpc_listen) and is_local_only(options.http_listen)):
        return (), ""
    return (), ensure_dev_key(options.home)


async def serve(options: ServerOptions) -> None:
    from tunewire.gateway.config import GatewayConfig
    from tunewire.gateway.server import start_gateway
    from tunewire.trainer.config import TrainerConfig
    from tunewire.trainer.server import start_trainer

    env_keys, dev_key = choose_keys(options)
    # With no token set, the trainer makes its own (the home's internal-token file)
    # and the gateway in this process is handed it.
    trainer = await start_trainer(
        TrainerConfig(
            home=options.home,
            listen=options.trainer_listen,
            data_roots=options.data_roots,
            model_roots=options.model_roots,
            internal_token=os.environ.get(INTERNAL_TOKEN_ENV, ""),
            max_running_jobs=options.max_running_jobs,
            wandb_api_key=os.environ.get("WANDB_API_KEY", ""),
        )
    )
    try:
        gateway = await start_gateway(
            GatewayConfig(
                trainer=trainer.address,
                grpc_listen=options.grpc_listen,
                http_listen=options.http_listen,
                keys_file=options.keys_file,
                api_keys=env_keys + ((dev_key,) if dev_key else ()),
                internal_token=trainer.credential,
                cors_origins=options.cors_origins,
            )
        )
    except BaseException:
        await trainer.stop(grace=5)
        raise
    print(
        banner(
            options, trainer.address, gateway.grpc_address, gateway.http_address, env_keys, dev_key
        ),
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(
        f"{PROG}: stopping (running jobs checkpoint and resume at the next start; Ctrl-C again to stop at once)",
        flush=True,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal interrupts the graceful stop
        loop.remove_signal_handler(sig)
    await gateway.stop(grace=2.0)
    await trainer.stop(grace=STOP_GRACE_SECONDS)
    print(f"{PROG}: stopped", flush=True)


def banner(
    options: ServerOptions, trainer: str, grpc: str, http: str, env_keys: tuple, dev_key: str
) -> str:
    lines = [
        f"tunewire server is up (state in {options.home})",
        f"  gateway gRPC  {grpc}   (clients, buf curl, grpcurl)",
        f"  gateway HTTP  http://{http}   (curl, browsers)",
        f"  trainer       {trainer}   ({'this host only, ' if is_local_only(trainer) else ''}"
        "internal credential required)",
    ]
    if dev_key:
        lines += [
            "",
            "  ┌─ development key (admin; accepted only on this machine's loopback addresses) ─",
            f"  │  {dev_key}",
            f"  │  saved in {dev_key_path(options.home)}; `tunewire` commands here use it by themselves.",
            f"  │  For curl:  export TUNEWIRE_API_KEY=$(cat {_shown(dev_key_path(options.home))})",
            "  └─ set TUNEWIRE_API_KEY or create keys (`tunewire keys create NAME`) to replace it",
        ]
    elif env_keys:
        lines.append(
            "  keys: TUNEWIRE_API_KEY from the environment"
            + (" and the keys file" if options.keys_file.exists() else "")
        )
    elif options.keys_file.exists():
        lines.append(f"  keys: {options.keys_file}")
    else:
        lines.append(
            "  no API keys: only health and server info answer; "
            "create one with `tunewire keys create NAME --admin` or set TUNEWIRE_API_KEY"
        )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_trainer(argv: list[str]) -> int:
    from tunewire.trainer.main import main

    return main(argv)


def run_gateway(argv: list[str]) -> int:
    from tunewire.gateway.main import main

    return main(argv)
