"""What every client subcommand shares: connection flags, and failures as one line.

A user mistake or an unreachable server is never a traceback: it is one line
on stderr saying what went wrong, where, and what to do, and a non-zero exit
status (1: the operation failed; 2: the command line or a config file is
wrong; 130: interrupted). `--verbose` adds the details underneath.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import grpc

from tunewire.client import DEFAULT_ADDRESS, Client, SpecError, TunewireError, default_address
from tunewire.reasons import Reason

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CliError(Exception):
    """A failure already worded for the user (one line), with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED, details: str = ""):
        super().__init__(message)
        self.status = status
        self.details = details


def add_connection_flags(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """--address, --api-key, --verbose. On a subcommand's parser their defaults are
    suppressed, so that flags given before the subcommand are not reset by it."""
    unset = {"default": argparse.SUPPRESS} if subcommand else {}
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--address",
        **(unset or {"default": None}),
        help="gateway (or trainer) host:port (default $TUNEWIRE_ADDRESS or localhost:50051)",
    )
    group.add_argument(
        "--api-key",
        **(unset or {"default": None}),
        help="API key (default $TUNEWIRE_API_KEY, else a local `tunewire server`'s development key)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        **(unset or {"default": False}),
        help="show details of errors",
    )


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status argparse chose (usage errors, --help)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def run_client_command(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str],
    body: Callable[[Client, argparse.Namespace], int | None],
) -> int:
    """Parses, connects, runs `body(client, args)`, and turns every failure into one line."""
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    return guarded(prog, lambda: _with_client(args, body), verbose=args.verbose)


def _with_client(args, body) -> int:
    with Client(args.address, args.api_key) as client:
        return body(client, args) or 0


def guarded(prog: str, action: Callable[[], int], *, verbose: bool = False) -> int:
    try:
        return action()
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TunewireError as error:
        fail(prog, describe(error), verbose_details(error) if verbose else "")
        return EXIT_FAILED
    except SpecError as error:
        fail(prog, str(error))
        return EXIT_USAGE
    except CliError as error:
        fail(prog, str(error), error.details if verbose else "")
        return error.status
    except grpc.RpcError as error:  # a call made outside Client; decode it the same way
        from tunewire.client.errors import from_rpc_error

        fail(prog, describe(from_rpc_error(error)))
        return EXIT_FAILED
    except BrokenPipeError:  # `tunewire jobs | head`: the reader left, nothing to say
        return 0
    except Exception as error:
        fail(
            prog,
            f"unexpected error: {type(error).__name__}: {error} (run with --verbose for the traceback)",
            traceback.format_exc() if verbose else "",
        )
        return EXIT_FAILED


def fail(prog: str, message: str, details: str = "") -> None:
    print(f"{prog}: {message}", file=sys.stderr)
    if details:
        print(details.rstrip(), file=sys.stderr)


def describe(error: TunewireError) -> str:
    """One line: what failed, where, and what to do about it."""
    where = error.address or default_address()
    code = error.code
    if error.unreachable:
        return (
            f"cannot reach the tunewire server at {where} ({error.connection_problem}); "
            "start it with `tunewire server`, or point --address / TUNEWIRE_ADDRESS at it"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED and error.reason == Reason.INTERNAL_TOKEN_REQUIRED:
        return (
            f"{where} is a trainer, which accepts calls only with its internal credential; "
            "use the gateway (--address, default "
            f"{DEFAULT_ADDRESS}), or set TUNEWIRE_HOME to the trainer's state directory "
            "as the user who owns it (its internal-token file is read from there)"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"the server at {where} refused the call: {error.message}; pass the key with --api-key "
            "or TUNEWIRE_API_KEY"
            + ("" if "keys create" in error.message else " (`tunewire keys create NAME` makes one)")
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT and error.violations:
        listed = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
        return (
            f"rejected by the server: {listed}"
            if error.has_status
            else f"invalid request: {listed}"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        hint = (
            " (`tunewire jobs` lists yours)"
            if error.resource_type in ("", "job", "training job")
            else ""
        )
        return f"{error.message}{hint}"
    if code == grpc.StatusCode.UNAVAILABLE:
        retry = (
            f"; try again in {error.retry_after:g} s"
            if error.retry_after
            else "; try again shortly"
        )
        return f"the server at {where} is unavailable: {error.message}{retry}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = f"; try again in {error.retry_after:g} s" if error.retry_after else ""
        return f"{error.message}{retry}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the server at {where} did not answer in time; check that it is not overloaded and try again"
    return f"{error.message} ({code.name.lower()}, from {where})"


def verbose_details(error: TunewireError) -> str:
    lines = [f"  code: {error.code.name}", f"  address: {error.address}"]
    if error.reason:
        lines.append(f"  reason: {error.reason}")
    if error.resource_type:
        lines.append(f"  resource: {error.resource_type} {error.resource_name}")
    lines += [f"  violation: {v.field}: {v.description}" for v in error.violations]
    if error.debug:
        lines.append(f"  grpc: {error.debug}")
    return "\n".join(lines)
