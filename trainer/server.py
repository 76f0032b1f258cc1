"""Builds and runs the trainer daemon's gRPC server (tests start it on port 0)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tunewire import addresses, reflection
from tunewire.identity import ensure_credential
from tunewire.trainer import capabilities
from tunewire.trainer.api.datasets import DatasetService
from tunewire.trainer.api.training import TrainingService
from tunewire.trainer.api.training import register as register_training_service
from tunewire.trainer.api.webhooks import WebhookService
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets.manager import DatasetManager
from tunewire.trainer.identity import CredentialInterceptor
from tunewire.trainer.inference.worker_link import InferenceWorker
from tunewire.trainer.jobs.data import JobDataPreparer
from tunewire.trainer.jobs.event_bus import EventBus
from tunewire.trainer.jobs.event_relay import EventRelay
from tunewire.trainer.jobs.lease_keeper import LeaseKeeper, trainer_id
from tunewire.trainer.jobs.manager import JobManager
from tunewire.trainer.jobs.runner import JobRunner
from tunewire.trainer.store import db, integrity
from tunewire.trainer.store.database import open_database
from tunewire.trainer.store.datasets import DatasetStore
from tunewire.trainer.store.jobs import EVENTS_CHANNEL, QUEUE_CHANNEL, JobStore
from tunewire.trainer.store.leases import LeaseStore
from tunewire.trainer.store.notifications import Listener
from tunewire.trainer.store.webhooks import WebhookStore
from tunewire.trainer.webhooks.dispatcher import RetryPolicy, WebhookDispatcher
from tunewire.trainer.webhooks.manager import WebhookManager
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb
from tunewire.v1 import webhook_service_pb2_grpc as webhook_service_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    training_service_pb.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    dataset_service_pb.DESCRIPTOR.services_by_name["DatasetService"].full_name,
    webhook_service_pb.DESCRIPTOR.services_by_name["WebhookService"].full_name,
)
MAX_MESSAGE_BYTES = 64 << 20


class ConfigError(ValueError):
    """The daemon cannot start with this configuration."""


@dataclass
class TrainerServer:
    config: TrainerConfig
    server: grpc.aio.Server
    address: str
    port: int
    runner: JobRunner
    jobs: JobManager
    bus: EventBus
    health: health.aio.HealthServicer
    capabilities: asyncio.Future
    inference: InferenceWorker
    webhooks: WebhookDispatcher
    keeper: LeaseKeeper
    _listener: Listener | None
    _conn: db.Database

    @property
    def credential(self) -> str:
        """What every caller must present as x-tunewire-internal-token."""
        return self.config.internal_token

    async def stop(self, grace: float | None = None) -> None:
        """SIGTERM path: refuse new work, let running jobs checkpoint, then exit."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.runner.shutdown(grace)
        await self.keeper.stop()
        if self._listener is not None:
            self._listener.stop()
        self.bus.close_all()
        await self.server.stop(grace=2)
        await self.inference.close()
        await self.webhooks.stop()
        if not self.capabilities.done():
            self.capabilities.cancel()
            await asyncio.gather(self.capabilities, return_exceptions=True)
        self._conn.close()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_trainer(config: TrainerConfig) -> TrainerServer:
    try:
        address = addresses.parse(config.listen_address)
    except addresses.AddressError as exc:
        raise ConfigError(f"cannot listen: {exc}") from None
    if not address.local_only and not config.internal_token:
        raise ConfigError(
            f"refusing to listen on {address}: other hosts could reach the trainer. "
            "Set TUNEWIRE_INTERNAL_TOKEN (the gateway presents it) or listen on loopback / a unix socket"
        )
    if not config.internal_token:
        try:
            config = replace(config, internal_token=ensure_credential(config.home))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot make the internal credential: {exc}") from None
    for directory in (config.home, config.jobs_dir, config.datasets_dir):
        directory.mkdir(parents=True, exist_ok=True)

    if not config.database:
        # Before anything listens: a damaged database never looks SERVING.
        try:
            integrity.check_at_start(config.db_path)
        except integrity.DatabaseCorrupt as exc:
            raise ConfigError(str(exc)) from None
    try:
        conn = open_database(config.database or config.db_path)
    except db.DatabaseError as exc:
        raise ConfigError(str(exc)) from None
    shared = conn.dialect == "postgresql"
    try:
        me = trainer_id(config.home, config.trainer_id)
    except OSError as exc:
        conn.close()
        raise ConfigError(f"cannot name this trainer: {exc}") from None
    store = JobStore(conn, origin=me)
    datasets = DatasetManager(config, DatasetStore(conn))
    bus = EventBus()
    leases = LeaseStore(conn, config.lease_seconds)
    runner = JobRunner(config, store, bus, leases, me, shared=shared)
    jobs = JobManager(config, store, bus, runner, JobDataPreparer(config, datasets))
    webhook_store = WebhookStore(conn)
    webhooks = WebhookManager(webhook_store, config.webhook_allow_private_networks)
    dispatcher = WebhookDispatcher(
        webhook_store,
        RetryPolicy(
            config.webhook_first_retry_seconds,
            config.webhook_max_retry_delay_seconds,
            config.webhook_retry_window_seconds,
            config.webhook_timeout_seconds,
        ),
        config.webhook_allow_private_networks,
    )
    store.on_end_in_transaction.append(webhooks.queue_for_ended_job)
    store.on_end_committed.append(dispatcher.wake)
    caps = asyncio.ensure_future(capabilities.probe(config.python))

    server = grpc.aio.server(
        interceptors=[CredentialInterceptor(config.internal_token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # A second daemon on the same port must fail, not share it silently.
            ("grpc.so_reuseport", 0),
        ],
    )
    inference_worker = InferenceWorker(
        config.python, config.home, config.inference_memory_bytes, config.inference_nice
    )
    register_training_service(TrainingService(config, jobs, caps, inference_worker), server)
    dataset_service_grpc.add_DatasetServiceServicer_to_server(
        DatasetService(config, datasets), server
    )
    webhook_service_grpc.add_WebhookServiceServicer_to_server(
        WebhookService(config, webhooks), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)

    try:
        port = server.add_insecure_port(str(address))
    except RuntimeError:  # grpc's way of saying the bind failed
        port = 0
    if port == 0 and not address.is_unix:
        conn.close()
        caps.cancel()
        raise ConfigError(
            f"cannot listen on {address}: the address is in use or not available here"
        )
    await server.start()
    if address.is_unix:
        # Only this user may even connect (the credential is still required).
        Path(address.path).chmod(0o600)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    dispatcher.start()
    bound = str(address.with_port(port))
    keeper = LeaseKeeper(runner, leases, config.heartbeat_seconds, bound)
    listener = None
    if shared:
        # Wake-ups and other trainers' events, without polling (LISTEN/NOTIFY).
        relay = EventRelay(store, bus, me, keeper.wake)
        listener = Listener(
            config.database,
            (QUEUE_CHANNEL, EVENTS_CHANNEL),
            relay.heard,
            asyncio.get_running_loop(),
        )
        listener.start()
    runner.recover()
    await runner.schedule()
    keeper.start()
    log.info(
        "tunewire-trainer %s listening on %s (home %s, %s)",
        me,
        bound,
        config.home,
        "shared PostgreSQL database" if shared else "SQLite",
    )
    return TrainerServer(
        config,
        server,
        bound,
        port,
        runner,
        jobs,
        bus,
        health_servicer,
        caps,
        inference_worker,
        dispatcher,
        keeper,
        listener,
        conn,
    )
