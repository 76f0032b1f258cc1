"""HTTP/JSON handlers for the annotated RPCs: unary calls, live streams, uploads.

JSON both ways through protobuf's `json_format` (proto field names; fields
without presence are printed with their defaults, so `"valid": false` shows).
A server stream is newline-delimited JSON, `{"result": …}` per message and a
last `{"error": …}` if it fails, or Server-Sent Events when the client accepts
`text/event-stream`: `id:` is the event's sequence and `Last-Event-ID` resumes
after it. A client-streaming upload sends the request body on as chunk messages
while it arrives.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from tunewire.errors import FieldViolation, ServiceError, invalid_argument
from tunewire.gateway import sse as sse_frames
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.byte_stream import ByteStreams, is_byte_stream
from tunewire.gateway.forward import pump_upload
from tunewire.gateway.http_errors import status_to_dict
from tunewire.gateway.http_rules import HttpRoute, build_request, field_path_named, set_from_strings
from tunewire.gateway.limits import StreamLimiter, upload_too_large
from tunewire.gateway.trainer_link import TrainerLink

# How long a stream may take to produce its first message before the response
# is committed as 200; errors that come sooner get their own HTTP status.
FIRST_MESSAGE_WAIT_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def to_dict(message: Message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def timeout_from(headers) -> float | None:
    """The deadline of an HTTP call, from a `grpc-timeout` header as grpc-gateway reads it."""
    text = headers.get("grpc-timeout")
    if text is None:
        return None
    match = _TIMEOUT.fullmatch(text.strip())
    if not match:
        raise invalid_argument(
            [
                FieldViolation(
                    "grpc-timeout",
                    f"{text!r} is not a timeout such as 500m or 30S (units H M S m u n)",
                )
            ]
        )
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


class Transcoder:
    def __init__(
        self,
        link: TrainerLink,
        streams: StreamLimiter,
        max_upload_bytes: int,
        upload_chunk_bytes: int,
    ):
        self._link = link
        self._streams = streams
        self._max_upload = max_upload_bytes
        self._chunk = upload_chunk_bytes
        self._byte_streams = ByteStreams(link, streams)

    def add_routes(self, app: web.Application, routes: list[HttpRoute]) -> None:
        for route in routes:
            method = route.method
            if method.client_streaming and method.server_streaming:
                continue  # no HTTP form for bidirectional streams
            if method.client_streaming:
                handler = self._upload_handler(route)
            elif is_byte_stream(method):
                handler = self._byte_streams.handler(route)
            elif method.server_streaming:
                handler = self._stream_handler(route)
            else:
                handler = self._unary_handler(route)
            handler.tunewire_public = method.public
            app.router.add_route(
                route.verb, route.aiohttp_path, handler, name=f"{method.service}.{method.name}"
            )

    # ---- unary ------------------------------------------------------------------------

    def _unary_handler(self, route: HttpRoute):
        link, method = self._link, route.method

        async def unary(request: web.Request) -> web.Response:
            body = await request.read() if route.body else None
            message = build_request(route, request.match_info, request.query, body)
            data = await link.unary(
                method,
                message.SerializeToString(),
                request[PRINCIPAL],
                timeout_from(request.headers),
            )
            response = method.response_class.FromString(data)
            if route.response_body:
                response = getattr(response, route.response_body)
            return web.Response(text=dumps(to_dict(response)), content_type="application/json")

        return unary

    # ---- server streams -----------------------------------------------------------------

    def _stream_handler(self, route: HttpRoute):
        link, method = self._link, route.method
        resume_field = field_path_named(method.request_class.DESCRIPTOR, "after_sequence", depth=1)
        sequence_path = field_path_named(method.response_class.DESCRIPTOR, "sequence")

        async def stream(request: web.Request) -> web.StreamResponse:
            sse = EVENT_STREAM in request.headers.get("Accept", "")
            body = await request.read() if route.body else None  # StreamGenerate's request
            message = build_request(route, request.match_info, request.query, body)
            last_event_id = request.headers.get("Last-Event-ID", "").strip()
            if sse and resume_field and last_event_id:
                message.ClearField(resume_field[0])
                set_from_strings(message, resume_field[0], [last_event_id], "Last-Event-ID")
            principal = request[PRINCIPAL]
            with self._streams.open(principal.name):
                call = link.server_stream(
                    method, message.SerializeToString(), principal, timeout_from(request.headers)
                )
                try:
                    with link.tracking(call):
                        return await self._relay_stream(request, call, method, sse, sequence_path)
                finally:
                    call.cancel()  # the client left or the stream failed: end the trainer's side too

        return stream

    async def _relay_stream(
        self, request, call, method, sse: bool, sequence_path
    ) -> web.StreamResponse:
        reader = asyncio.ensure_future(self._link.read(call))
        try:
            # Wait briefly before committing to 200, so that an immediate error
            # (unknown job, bad argument) gets its own HTTP status.
            await asyncio.wait({reader}, timeout=FIRST_MESSAGE_WAIT_SECONDS)
            if reader.done():
                first = (
                    reader.result()
                )  # raises the trainer's error, answered by the error middleware
                if first is grpc.aio.EOF and sse:
                    return web.Response(
                        status=204
                    )  # nothing more will come: tells EventSource to stop
            response = web.StreamResponse(
                headers={
                    "Content-Type": EVENT_STREAM if sse else NDJSON,
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            while True:
                while not reader.done():
                    await asyncio.wait({reader}, timeout=SSE_KEEPALIVE_SECONDS)
                    if sse and not reader.done():
                        await response.write(b": keep-alive\n\n")
                try:
                    data = reader.result()
                except (grpc.aio.AioRpcError, ServiceError) as err:
                    status = status_to_dict(
                        err.to_status()
                        if isinstance(err, ServiceError)
                        else self._link.status_of(err)
                    )
                    await response.write(
                        sse_frames.error_frame(status)
                        if sse
                        else (dumps({"error": status}) + "\n").encode()
                    )
                    break
                if data is grpc.aio.EOF:
                    break
                await response.write(
                    _encode(method.response_class.FromString(data), sse, sequence_path)
                )
                reader = asyncio.ensure_future(self._link.read(call))
            await response.write_eof()
            return response
        finally:
            reader.cancel()

    # ---- uploads ---------------------------------------------------------------------------

    def _upload_handler(self, route: HttpRoute):
        link, method = self._link, route.method
        if not route.body or route.body == "*":
            raise ValueError(
                f"{method.path}: a client-streaming route needs `body` naming a bytes field"
            )

        async def upload(request: web.Request) -> web.Response:
            size = request.content_length
            if size is not None and size > self._max_upload:
                raise upload_too_large(self._max_upload)
            first = build_request(route, request.match_info, request.query, None)
            principal = request[PRINCIPAL]

            async def messages():
                if first.ByteSize():
                    yield first.SerializeToString()
                total = 0
                while chunk := await _read_chunk(request.content, self._chunk):
                    total += len(chunk)
                    if total > self._max_upload:  # a body without Content-Length, or a lying one
                        raise upload_too_large(self._max_upload)
                    yield method.request_class(**{route.body: chunk}).SerializeToString()

            with self._streams.open(principal.name):
                call = link.client_stream(method, principal, timeout_from(request.headers))
                try:
                    with link.tracking(call):
                        # The body is counted above; framing bytes are not the user's.
                        data = await pump_upload(call, messages(), limit=float("inf"))
                finally:
                    call.cancel()
            response = method.response_class.FromString(data)
            return web.Response(text=dumps(to_dict(response)), content_type="application/json")

        return upload


async def _read_chunk(content, size: int) -> bytes:
    """Up to `size` bytes of the body (fewer only at its end)."""
    buffer = bytearray()
    while len(buffer) < size:
        data = await content.read(size - len(buffer))
        if not data:
            break
        buffer += data
    return bytes(buffer)


def _encode(message: Message, sse: bool, sequence_path) -> bytes:
    body = to_dict(message)
    if not sse:
        return (dumps({"result": body}) + "\n").encode()
    return sse_frames.event_frame(message, body, sequence_path)
