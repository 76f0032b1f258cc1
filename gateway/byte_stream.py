"""Download RPCs over HTTP as plain files: the body is the bytes, not JSON.

A server-streaming RPC whose response is `oneof part {FileInfo info; bytes
chunk}` and whose request has a `ByteRange range` (DownloadArtifact, and every
later download RPC) is served here: `Range: bytes=A-B` / `bytes=A-` becomes the
request's range (206 Partial Content, 416 past the end), `If-Range` with the
ETag restarts from 0 when the file changed, and the response carries
`Content-Length`, `ETag` ("the SHA-256"), `Repr-Digest: sha-256=:…:` (RFC 9530),
`X-Checksum-Sha256` and a `Content-Disposition` file name. A failure after the
headers are out closes the connection, so a client sees a short body, never a
complete-looking wrong file.
"""

from __future__ import annotations

import base64
import re

import grpc
from aiohttp import web
from google.protobuf import descriptor as pb_descriptor
from google.rpc import error_details_pb2

from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.http_errors import StatusError
from tunewire.gateway.http_rules import HttpRoute, build_request
from tunewire.gateway.limits import StreamLimiter
from tunewire.gateway.trainer_link import TrainerLink
from tunewire.v1 import artifact_pb2 as artifact_pb

_RANGE = re.compile(r"bytes=(\d{1,18})-(\d{0,18})")


def is_byte_stream(method) -> bool:
    response = method.response_class.DESCRIPTOR.fields_by_name
    request = method.request_class.DESCRIPTOR.fields_by_name
    info, chunk, byte_range = response.get("info"), response.get("chunk"), request.get("range")
    return (
        method.server_streaming
        and info is not None
        and info.message_type is artifact_pb.FileInfo.DESCRIPTOR
        and chunk is not None
        and chunk.type == pb_descriptor.FieldDescriptor.TYPE_BYTES
        and byte_range is not None
        and byte_range.message_type is artifact_pb.ByteRange.DESCRIPTOR
    )


def parse_range(header: str | None) -> tuple[int, int] | None:
    """(offset, length; 0 = to the end) of a single `bytes=A-B` or `bytes=A-` range;
    None for no header or a form this server answers with the whole file
    (suffix ranges, several ranges), as RFC 9110 allows."""
    match = _RANGE.fullmatch((header or "").strip())
    if not match:
        return None
    start, end = int(match.group(1)), match.group(2)
    if end and int(end) < start:
        return None
    return start, (int(end) - start + 1) if end else 0


def etag_of(info: artifact_pb.FileInfo) -> str:
    return f'"{info.sha256}"'


def _headers(info: artifact_pb.FileInfo, partial: bool) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(info.sha256)).decode()
    headers = {
        "Content-Type": info.content_type or "application/octet-stream",
        "Content-Length": str(info.length),
        "Content-Disposition": f'attachment; filename="{info.name}"',
        "Accept-Ranges": "bytes",
        "ETag": etag_of(info),
        "Repr-Digest": f"sha-256=:{digest}:",
        "X-Checksum-Sha256": info.sha256,
    }
    if partial:
        end = info.offset + info.length - 1
        headers["Content-Range"] = f"bytes {info.offset}-{end}/{info.size_bytes}"
    return headers


class ByteStreams:
    def __init__(self, link: TrainerLink, streams: StreamLimiter):
        self._link = link
        self._streams = streams

    def handler(self, route: HttpRoute):
        link, method = self._link, route.method

        async def download(request: web.Request) -> web.StreamResponse:
            message = build_request(route, request.match_info, request.query, None)
            asked = parse_range(request.headers.get("Range"))
            if asked and not message.HasField("range"):
                message.range.offset, message.range.length = asked
            principal = request[PRINCIPAL]
            with self._streams.open(principal.name):
                call = link.server_stream(method, message.SerializeToString(), principal, None)
                try:
                    with link.tracking(call):
                        first = await _first(link, call, asked)
                        if first is None:
                            return _not_satisfiable(link, call)
                        info = method.response_class.FromString(first).info
                        if_range = request.headers.get("If-Range")
                        if asked and if_range and if_range.strip() != etag_of(info):
                            call.cancel()  # the file changed since: send all of it
                            message.ClearField("range")
                            call = link.server_stream(
                                method, message.SerializeToString(), principal, None
                            )
                            with link.tracking(call):
                                info = method.response_class.FromString(await link.read(call)).info
                                return await _relay(request, link, method, call, info, False)
                        return await _relay(request, link, method, call, info, bool(asked))
                finally:
                    call.cancel()

        return download


async def _first(link: TrainerLink, call, asked) -> bytes | None:
    """The first message (the FileInfo); None when the range lies past the end."""
    try:
        data = await link.read(call)
    except grpc.aio.AioRpcError as err:
        if asked and err.code() == grpc.StatusCode.OUT_OF_RANGE:
            call.tunewire_error = link.status_of(err)
            return None
        raise
    if data is grpc.aio.EOF:
        raise StatusError(link.unavailable_status())
    return data


def _not_satisfiable(link: TrainerLink, call) -> web.Response:
    status = call.tunewire_error
    size = ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            size = info.metadata.get("size_bytes", "")
    return web.Response(
        status=416,
        text=status.message,
        headers={"Content-Range": f"bytes */{size or '*'}", "Accept-Ranges": "bytes"},
    )


async def _relay(request, link, method, call, info, partial: bool) -> web.StreamResponse:
    response = web.StreamResponse(status=206 if partial else 200, headers=_headers(info, partial))
    await response.prepare(request)
    sent = 0
    try:
        while (data := await link.read(call)) is not grpc.aio.EOF:
            chunk = method.response_class.FromString(data).chunk
            sent += len(chunk)
            await response.write(chunk)
    except grpc.aio.AioRpcError:
        sent = -1
    if sent != info.length:
        # Headers promised `info.length` bytes: cut the connection rather than
        # end a body that looks complete.
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
