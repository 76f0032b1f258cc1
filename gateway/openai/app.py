"""The OpenAI sub-application: its routes and the middleware that authenticates every
call and answers every refusal in OpenAI's error shape (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web

from tunewire.errors import ServiceError
from tunewire.gateway.auth import PRINCIPAL, Authenticator, http_credentials
from tunewire.gateway.http_errors import service_error_from_http, unreadable_body
from tunewire.gateway.limits import StreamLimiter
from tunewire.gateway.methods import Method
from tunewire.gateway.openai.calls import TrainerCalls
from tunewire.gateway.openai.chat import ChatRoutes
from tunewire.gateway.openai.checkpoints import CheckpointRoutes
from tunewire.gateway.openai.errors import OpenAIError, error_response, exception_response
from tunewire.gateway.openai.events import EventRoutes
from tunewire.gateway.openai.files import FileRoutes
from tunewire.gateway.openai.jobs import JobRoutes
from tunewire.gateway.openai.models import ModelRoutes
from tunewire.gateway.trainer_link import TrainerLink

PREFIX = "/openai/v1"
log = logging.getLogger(__name__)


def _middleware(authenticator: Authenticator, link: TrainerLink):
    @web.middleware
    async def openai_errors_and_auth(request: web.Request, handler):
        try:
            if getattr(request.match_info, "http_exception", None) is None:
                request[PRINCIPAL] = authenticator.authenticate(
                    http_credentials(request), public=False
                )
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (
                f"Invalid URL ({request.method} {request.path})"
                if exc.status in (404, 405)
                else exc.text or exc.reason
            )
            return exception_response(service_error_from_http(exc.status, message))
        except (OpenAIError, ServiceError) as exc:
            return exception_response(exc)
        except grpc.aio.AioRpcError as err:
            return error_response(link.status_of(err))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:
            refusal = unreadable_body(exc)
            if refusal is not None:
                return exception_response(refusal)
            log.exception("unexpected error in %s %s", request.method, request.path)
            return exception_response(exc)

    return openai_errors_and_auth


def add_openai_api(
    app: web.Application,
    link: TrainerLink,
    methods: dict[str, Method],
    authenticator: Authenticator,
    streams: StreamLimiter,
    *,
    max_body_bytes: int,
    max_upload_bytes: int,
    upload_chunk_bytes: int,
) -> None:
    calls = TrainerCalls(link, methods, streams)
    api = web.Application(
        middlewares=[_middleware(authenticator, link)], client_max_size=max_body_bytes
    )
    for routes in (
        FileRoutes(calls, max_upload_bytes, upload_chunk_bytes),
        JobRoutes(calls),
        EventRoutes(calls),
        CheckpointRoutes(calls),
        ChatRoutes(calls),
        ModelRoutes(calls),
    ):
        routes.add_to(api.router)
    app.add_subapp(PREFIX, api)
