"""`tunewire-trainer`: the daemon's entry point (flags, logging, signals)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from tunewire.trainer.config import TrainerConfig, parse_args
from tunewire.trainer.server import ConfigError, start_trainer


async def serve(config: TrainerConfig) -> None:
    trainer = await start_trainer(config)
    print(f"tunewire-trainer: listening on {trainer.address}, state in {config.home}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(
        "tunewire-trainer: stopping (running jobs checkpoint and resume at the next start)",
        flush=True,
    )
    await trainer.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"tunewire-trainer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
