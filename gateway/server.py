"""Builds and runs the gateway: a grpc.aio server and an aiohttp server in one
event loop, both in front of one channel to the trainer. Tests start it on port 0
for both and read the bound ports from the returned `GatewayServer`."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc

from tunewire import addresses, reflection
from tunewire.gateway import legacy
from tunewire.gateway.access_log import RedactingAccessLogger
from tunewire.gateway.auth import Authenticator, AuthInterceptor, http_auth_middleware
from tunewire.gateway.config import GatewayConfig
from tunewire.gateway.console import Console
from tunewire.gateway.cors import CorsPolicy
from tunewire.gateway.forward import Forwarder
from tunewire.gateway.health import TrainerHealth
from tunewire.gateway.http_errors import error_middleware
from tunewire.gateway.http_rules import routes_for
from tunewire.gateway.keys import KeyRing
from tunewire.gateway.limits import RateLimiter, StreamLimiter
from tunewire.gateway.methods import forwarded_methods, service_names
from tunewire.gateway.openai.app import add_openai_api
from tunewire.gateway.trainer_link import TrainerLink
from tunewire.gateway.transcode import Transcoder

log = logging.getLogger(__name__)


class ListenError(OSError):
    """An address the gateway cannot serve on."""


@dataclass
class GatewayServer:
    config: GatewayConfig
    grpc_server: grpc.aio.Server
    http_runner: web.AppRunner
    link: TrainerLink
    trainer_health: TrainerHealth
    health: health.aio.HealthServicer
    streams: StreamLimiter
    grpc_port: int
    http_port: int
    grpc_address: str
    http_address: str

    @property
    def http_url(self) -> str:
        return f"http://{self.http_address}"

    async def stop(self, grace: float = 2.0) -> None:
        """Stops taking calls, lets running ones finish for `grace` seconds.
        Jobs are the trainer's: nothing here touches them."""
        await self.health.enter_graceful_shutdown()
        await self.trainer_health.stop()
        # Open streams end with UNAVAILABLE "the gateway is stopping" (a last
        # NDJSON error line, an SSE error event) rather than a cut connection.
        self.link.stop_streams()
        for _ in range(100):
            if not self.streams.total():
                break
            await asyncio.sleep(0.01)
        await self.http_runner.shutdown()
        await self.grpc_server.stop(grace)
        await self.http_runner.cleanup()
        await self.link.close()

    async def wait(self) -> None:
        await self.grpc_server.wait_for_termination()


def _parse_listen(text: str, what: str) -> addresses.Address:
    try:
        return addresses.parse(text)
    except addresses.AddressError as exc:
        raise ListenError(f"cannot listen for {what}: {exc}") from None


def _http_socket(address: addresses.Address) -> socket.socket:
    if address.is_unix:
        raise ListenError(f"cannot listen on {address} for HTTP: give HOST:PORT")
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.bind_host, address.port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {address} for HTTP: {exc.strerror}") from None
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def start_gateway(config: GatewayConfig, keyring: KeyRing | None = None) -> GatewayServer:
    grpc_listen = _parse_listen(config.grpc_listen, "gRPC")
    http_listen = _parse_listen(config.http_listen, "HTTP")
    keyring = keyring or KeyRing(config.keys_file, config.api_keys)
    if not len(keyring):
        log.warning(
            "no API keys configured: only health, reflection and server info will answer. "
            "Create one with `tunewire keys create NAME` or set TUNEWIRE_API_KEY"
        )
    methods = forwarded_methods()
    link = TrainerLink(config)
    streams = StreamLimiter(config.max_streams_per_key)
    authenticator = Authenticator(keyring, RateLimiter(config.rate_per_second, config.rate_burst))

    grpc_server = grpc.aio.server(
        interceptors=[AuthInterceptor(authenticator, methods)],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared listener
        ],
    )
    Forwarder(link, methods, streams, config.max_upload_bytes).add_to_server(grpc_server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    trainer_health = TrainerHealth(
        link.channel, health_servicer, service_names(), config.health_retry_seconds
    )
    reflection.enable_server_reflection((*service_names(), health.SERVICE_NAME), grpc_server)
    try:
        grpc_port = grpc_server.add_insecure_port(str(grpc_listen))
    except RuntimeError:
        grpc_port = 0
    if grpc_port == 0 and not grpc_listen.is_unix:
        await link.close()
        raise ListenError(
            f"cannot listen on {config.grpc_listen} for gRPC (address in use or not available)"
        )

    cors = CorsPolicy(config.cors_origins)
    console = Console(authenticator, config.console_session_seconds)
    app = web.Application(
        middlewares=[
            error_middleware(link.status_of),
            cors.preflight_middleware(),
            console.middleware(),
            http_auth_middleware(authenticator),
        ],
        client_max_size=config.max_message_bytes,
    )
    Transcoder(link, streams, config.max_upload_bytes, config.upload_chunk_bytes).add_routes(
        app, routes_for(methods)
    )
    legacy.add_routes(app, link, methods, lambda: trainer_health.serving)
    add_openai_api(
        app,
        link,
        methods,
        authenticator,
        streams,
        max_body_bytes=config.max_message_bytes,
        max_upload_bytes=config.max_upload_bytes,
        upload_chunk_bytes=config.upload_chunk_bytes,
    )
    console.add_routes(app)
    cors.add_headers_to(app)
    # handler_cancellation: a client that disconnects cancels its handler, and
    # with it the trainer call it was waiting on.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        access_log_class=RedactingAccessLogger,
    )
    await runner.setup()
    try:
        sock = _http_socket(http_listen)
    except ListenError:
        await runner.cleanup()
        await link.close()
        raise
    await web.SockSite(runner, sock).start()
    http_port = sock.getsockname()[1]

    await grpc_server.start()
    await trainer_health.start()

    server = GatewayServer(
        config=config,
        grpc_server=grpc_server,
        http_runner=runner,
        link=link,
        trainer_health=trainer_health,
        health=health_servicer,
        streams=streams,
        grpc_port=grpc_port,
        http_port=http_port,
        grpc_address=str(grpc_listen.with_port(grpc_port)),
        http_address=str(http_listen.with_port(http_port)),
    )
    log.info(
        "tunewire-gateway: gRPC on %s, HTTP on %s, trainer at %s",
        server.grpc_address,
        server.http_address,
        config.trainer,
    )
    return server
