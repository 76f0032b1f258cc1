"""gRPC server reflection, v1 and v1alpha, from descriptors that keep the protos'
comments.

grpcio-reflection serves only v1alpha, from descriptors that have lost their
source info (no comments for `grpcurl describe`), and only the files a service
imports (clients print the google.rpc error details as base64). This servicer
answers both versions (the same messages under two package names) from the
descriptor set `make protos` writes with `--include_source_info`, which also
holds google/rpc/error_details.proto so clients can decode the details."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as messages

from tunewire.v1 import training_service_pb2 as training_service_pb

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
DESCRIPTOR_SET = "descriptors.binpb"


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's messages under the v1
    package (the v1 protocol is v1alpha renamed), so clients can describe it."""
    text = text_format.MessageToString(_library_file(messages))
    proto = text_format.Parse(
        text.replace("grpc.reflection.v1alpha", "grpc.reflection.v1"),
        descriptor_pb2.FileDescriptorProto(),
    )
    proto.name = "grpc/reflection/v1/reflection.proto"
    return proto


def _library_file(module) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def load_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Our protos with their comments and imports, then the health and reflection
    protos of the grpc libraries (whose copies carry no comments)."""
    # Beside the generated modules (tunewire.v1 is a namespace package, which
    # importlib.resources cannot read from in an editable install).
    data = Path(training_service_pb.__file__).with_name(DESCRIPTOR_SET).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    known = {f.name for f in files.file}
    for extra in (_library_file(health_pb2), _library_file(messages), _v1_reflection_file()):
        if extra.name not in known:
            files.file.append(extra)
    return files


class ReflectionServicer:
    """Answers ServerReflectionInfo for both protocol versions."""

    def __init__(self, service_names: Iterable[str], files: descriptor_pb2.FileDescriptorSet):
        self._service_names = tuple(sorted({*service_names, *SERVICE_NAMES}))
        self._files = {f.name: f for f in files.file}
        self._serialized = {f.name: f.SerializeToString() for f in files.file}
        self._pool = descriptor_pool.DescriptorPool()
        for f in files.file:  # protoc writes them in dependency order
            self._pool.Add(f)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handler = grpc.stream_stream_rpc_method_handler(
            self.ServerReflectionInfo,
            request_deserializer=messages.ServerReflectionRequest.FromString,
            response_serializer=messages.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
                for name in SERVICE_NAMES
            ]
        )

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[messages.ServerReflectionRequest], context
    ) -> AsyncIterator[messages.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(
        self, request: messages.ServerReflectionRequest
    ) -> messages.ServerReflectionResponse:
        response = messages.ServerReflectionResponse(original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "file_by_filename":
                self._with_files(response, request.file_by_filename)
            elif kind == "file_containing_symbol":
                symbol = request.file_containing_symbol
                self._with_files(response, self._pool.FindFileContainingSymbol(symbol).name)
            elif kind == "file_containing_extension":
                ask = request.file_containing_extension
                extended = self._pool.FindMessageTypeByName(ask.containing_type)
                extension = self._pool.FindExtensionByNumber(extended, ask.extension_number)
                self._with_files(response, extension.file.name)
            elif kind == "all_extension_numbers_of_type":
                extended = self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                numbers = sorted(e.number for e in self._pool.FindAllExtensions(extended))
                response.all_extension_numbers_response.base_type_name = extended.full_name
                response.all_extension_numbers_response.extension_number.extend(numbers)
            elif kind == "list_services":
                response.list_services_response.service.extend(
                    messages.ServiceResponse(name=name) for name in self._service_names
                )
            else:
                return _error(response, grpc.StatusCode.INVALID_ARGUMENT, "no request given")
        except KeyError:
            asked = getattr(request, kind)
            return _error(response, grpc.StatusCode.NOT_FOUND, f"not found: {asked}".strip())
        return response

    def _with_files(self, response: messages.ServerReflectionResponse, name: str) -> None:
        """The file and everything it imports, the file first."""
        if name not in self._files:
            raise KeyError(name)
        order, pending = [], [name]
        while pending:
            current = pending.pop()
            if current in order:
                continue
            order.append(current)
            pending.extend(reversed(self._files[current].dependency))
        response.file_descriptor_response.file_descriptor_proto.extend(
            self._serialized[n] for n in order
        )


def _error(
    response: messages.ServerReflectionResponse, code: grpc.StatusCode, message: str
) -> messages.ServerReflectionResponse:
    response.error_response.error_code = code.value[0]
    response.error_response.error_message = message
    return response


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection (v1 and v1alpha) for `service_names` on `server`."""
    ReflectionServicer(service_names, load_descriptor_set()).add_to_server(server)
