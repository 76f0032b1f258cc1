"""The gateway's configuration: one frozen dataclass, filled once from flags and environment.

The listen addresses default to loopback: the gateway speaks plaintext (TLS
belongs to a proxy in front of it), so reaching it from other hosts is a
decision to make with `--grpc-listen 0.0.0.0:50051 --http-listen 0.0.0.0:8200`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewire import addresses
from tunewire.gateway.cors import is_origin
from tunewire.identity import API_KEY_ENV_VARIABLES, INTERNAL_TOKEN_ENV, credential_path


def default_home(environ=os.environ) -> Path:
    return Path(environ.get("TUNEWIRE_HOME", "./.tunewire")).resolve()


def default_keys_file(environ=os.environ) -> Path:
    return default_home(environ) / "keys.yaml"


@dataclass(frozen=True)
class GatewayConfig:
    trainer: str = field(
        default=addresses.DEFAULT_TRAINER,
        metadata={
            "help": "Trainer address: host:port or unix:PATH; several trainers sharing a "
            "database: IP:PORT,IP:PORT or dns:///NAME:PORT (calls balanced over the healthy ones)."
        },
    )
    grpc_listen: str = field(
        default=addresses.DEFAULT_GATEWAY_GRPC,
        metadata={"help": "gRPC address to serve on (port 0: any free port)."},
    )
    http_listen: str = field(
        default=addresses.DEFAULT_GATEWAY_HTTP,
        metadata={"help": "HTTP address to serve on (port 0: any free port)."},
    )
    keys_file: Path | None = field(
        default=None, metadata={"help": "Keys file (hashes, names, roles); None: no file."}
    )
    api_keys: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata={"help": "Single-user admin keys (TUNEWIRE_API_KEY, MLX_TRAINING_API_KEY)."},
    )
    internal_token: str = field(
        default="",
        repr=False,
        metadata={"help": "The trainer's internal credential ($TUNEWIRE_INTERNAL_TOKEN)."},
    )
    credential_file: Path | None = field(
        default=None,
        metadata={
            "help": "Where to read the credential when internal_token is '' (the trainer's "
            "$TUNEWIRE_HOME/internal-token; re-read until it appears)."
        },
    )
    rate_per_second: float = field(
        default=50.0,
        metadata={"help": "Requests per second per key (token bucket refill); 0 disables."},
    )
    rate_burst: int = field(
        default=100, metadata={"help": "Requests a key may make at once before the rate applies."}
    )
    max_streams_per_key: int = field(
        default=16, metadata={"help": "Open streaming calls (watch, upload) per key."}
    )
    max_message_bytes: int = field(
        default=8 << 20, metadata={"help": "Largest gRPC message or HTTP JSON body."}
    )
    max_upload_bytes: int = field(default=2 << 30, metadata={"help": "Largest dataset upload."})
    upload_chunk_bytes: int = field(
        default=1 << 20, metadata={"help": "Chunk size an HTTP upload is forwarded in."}
    )
    unavailable_retry_seconds: float = field(
        default=1.0, metadata={"help": "Retry delay suggested while the trainer is down."}
    )
    health_retry_seconds: float = field(
        default=0.5, metadata={"help": "Delay between checks of a trainer that is down."}
    )
    console_session_seconds: float = field(
        default=8 * 3600.0,
        metadata={"help": "Lifetime of a web console session (its cookie's Max-Age)."},
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Origins whose pages may call the HTTP API cross-origin; '*': any."},
    )

    def __post_init__(self) -> None:
        for name in (
            "rate_burst",
            "max_streams_per_key",
            "max_message_bytes",
            "max_upload_bytes",
            "upload_chunk_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 60 <= self.console_session_seconds <= 30 * 86400:
            raise ValueError(
                "console_session_seconds must be between 60 and 2592000 (30 days), "
                f"got {self.console_session_seconds}"
            )
        if self.rate_per_second < 0:
            raise ValueError(
                f"rate_per_second must be 0 (off) or positive, got {self.rate_per_second}"
            )
        for origin in self.cors_origins:
            if not is_origin(origin):
                raise ValueError(
                    f"CORS origin {origin!r} is not scheme://host[:port] (no path) or '*'"
                )
        if self.upload_chunk_bytes > self.max_message_bytes:
            raise ValueError(
                f"upload_chunk_bytes ({self.upload_chunk_bytes}) must not exceed "
                f"max_message_bytes ({self.max_message_bytes})"
            )


def parse_args(argv: list[str] | None = None, environ=os.environ) -> GatewayConfig:
    parser = argparse.ArgumentParser(
        prog="tunewire-gateway",
        description="tunewire's gateway: authenticated gRPC and HTTP/JSON in front of the trainer.",
    )
    parser.add_argument(
        "--trainer",
        default=environ.get("TUNEWIRE_TRAINER", addresses.DEFAULT_TRAINER),
        help="trainer address, host:port or unix:PATH; several trainers sharing a database: "
        "IP:PORT,IP:PORT or dns:///NAME:PORT, balanced (default %(default)s)",
    )
    parser.add_argument(
        "--grpc-listen",
        default=addresses.DEFAULT_GATEWAY_GRPC,
        help="gRPC address (default %(default)s)",
    )
    parser.add_argument(
        "--http-listen",
        default=addresses.DEFAULT_GATEWAY_HTTP,
        help="HTTP address (default %(default)s)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="keys file made by `tunewire keys create` (default $TUNEWIRE_HOME/keys.yaml)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="requests per second per key; 0 disables (default %(default)s)",
    )
    parser.add_argument(
        "--burst", type=int, default=100, help="burst of requests per key (default %(default)s)"
    )
    parser.add_argument(
        "--max-streams", type=int, default=16, help="open streams per key (default %(default)s)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=2048,
        help="largest upload in MiB (default %(default)s)",
    )
    parser.add_argument(
        "--console-session-hours",
        type=float,
        default=8.0,
        help="lifetime of a web console sign-in (default %(default)s)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of ORIGIN (scheme://host[:port], or '*') call the HTTP API; repeatable "
        "(default: none)",
    )
    args = parser.parse_args(argv)
    try:
        addresses.channel_target(args.trainer)
    except addresses.AddressError as exc:
        parser.error(str(exc))
    try:
        return GatewayConfig(
            trainer=args.trainer,
            grpc_listen=args.grpc_listen,
            http_listen=args.http_listen,
            keys_file=(args.keys or default_keys_file(environ)).resolve(),
            api_keys=tuple(
                k for k in (environ.get(v, "").strip() for v in API_KEY_ENV_VARIABLES) if k
            ),
            internal_token=environ.get(INTERNAL_TOKEN_ENV, ""),
            credential_file=credential_path(default_home(environ)),
            rate_per_second=args.rate,
            rate_burst=args.burst,
            max_streams_per_key=args.max_streams,
            max_upload_bytes=args.max_upload_mb << 20,
            cors_origins=tuple(args.cors_origin),
            console_session_seconds=args.console_session_hours * 3600,
        )
    except ValueError as exc:
        parser.error(str(exc))
