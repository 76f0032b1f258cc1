"""The RPCs the gateway forwards, read from the generated descriptors.

Adding an RPC to a proto service is enough for the gateway to forward it over
gRPC and, when it has a `google.api.http` annotation, to route it over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory

from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb

SERVICES: tuple[pb_descriptor.ServiceDescriptor, ...] = (
    training_service_pb.DESCRIPTOR.services_by_name["TrainingService"],
    dataset_service_pb.DESCRIPTOR.services_by_name["DatasetService"],
    webhook_service_pb.DESCRIPTOR.services_by_name["WebhookService"],
)
# Calls anyone may make without a key (health and reflection are not forwarded
# and need none either).
PUBLIC_METHODS = frozenset({"/tunewire.v1.TrainingService/GetServerInfo"})


@dataclass(frozen=True)
class Method:
    path: str  # "/tunewire.v1.TrainingService/GetTrainingJob", as gRPC names it
    service: str
    name: str
    descriptor: pb_descriptor.MethodDescriptor
    request_class: type
    response_class: type
    client_streaming: bool
    server_streaming: bool
    public: bool


def forwarded_methods(services=SERVICES) -> dict[str, Method]:
    table = {}
    for service in services:
        for m in service.methods:
            path = f"/{service.full_name}/{m.name}"
            table[path] = Method(
                path=path,
                service=service.full_name,
                name=m.name,
                descriptor=m,
                request_class=message_factory.GetMessageClass(m.input_type),
                response_class=message_factory.GetMessageClass(m.output_type),
                client_streaming=m.client_streaming,
                server_streaming=m.server_streaming,
                public=path in PUBLIC_METHODS,
            )
    return table


def service_names(services=SERVICES) -> tuple[str, ...]:
    return tuple(s.full_name for s in services)
