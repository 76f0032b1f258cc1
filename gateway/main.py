"""`tunewire-gateway`: serve gRPC and HTTP/JSON in front of the trainer until SIGTERM/SIGINT.

    tunewire-gateway --trainer 127.0.0.1:50052 --grpc-listen 127.0.0.1:50051 \
        --http-listen 127.0.0.1:8200 --keys .tunewire/keys.yaml
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from tunewire.gateway.config import GatewayConfig, parse_args
from tunewire.gateway.keys import KeysFileError
from tunewire.gateway.server import ListenError, start_gateway

log = logging.getLogger("tunewire.gateway")


async def serve(config: GatewayConfig) -> None:
    server = await start_gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: open calls get 2 s to finish; jobs keep running in the trainer")
    await server.stop(grace=2.0)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except (KeysFileError, ListenError) as exc:
        print(f"tunewire-gateway: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
