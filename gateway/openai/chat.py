"""`POST /chat/completions`, plain and streamed (`stream: true` → server-sent events
in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`).

The model is a base model or a fine-tuned one (`ft:…`, also a checkpoint's
`…:ckpt-step-N`); generation runs in the trainer's inference worker.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import grpc
from aiohttp import web

from tunewire.errors import ServiceError, status_from_exception
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.keys import Principal
from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import TRAINING, TrainerCalls
from tunewire.gateway.openai.chat_request import ChatRequest, chat_request
from tunewire.gateway.openai.errors import OpenAIError, details, error_body
from tunewire.gateway.openai.fine_tuned import fine_tuned_job, model_not_found
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.reasons import Reason
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.version import __version__

FINGERPRINT = f"tunewire-{__version__}"


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class ChatRoutes:
    def __init__(self, calls: TrainerCalls):
        self._calls = calls

    async def _target(self, who: Principal, chat: ChatRequest) -> None:
        ref = names.parse_model(chat.model)
        if ref.fine_tuned:
            job = await fine_tuned_job(self._calls, who, ref)
            chat.generate.job_id = job.id
            if ref.step:
                chat.generate.checkpoint_step = ref.step
        else:
            chat.generate.model = chat.model

    def _error(self, err: grpc.aio.AioRpcError, chat: ChatRequest) -> OpenAIError:
        status = self._calls.link.status_of(err)
        _, violations = details(status)
        if violations and violations[0]["field"] == "model":
            return model_not_found(chat.model)
        return OpenAIError(status)

    async def _complete(self, who: Principal, chat: ChatRequest) -> Completion:
        try:
            reply = await self._calls.training("Generate", chat.generate, who)
        except grpc.aio.AioRpcError as err:
            raise self._error(err, chat) from None
        return _completion(reply)

    async def create(self, request: web.Request) -> web.StreamResponse:
        who = request[PRINCIPAL]
        chat = chat_request(await fields.json_object(request))
        await self._target(who, chat)
        created = int(time.time())
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        if chat.stream:
            return await self._stream(request, who, chat, completion_id, created)
        done = await self._complete(who, chat)
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": chat.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": done.finish_reason,
                    }
                ],
                "usage": _usage(done),
                "system_fingerprint": FINGERPRINT,
            }
        )

    async def _stream(
        self,
        request: web.Request,
        who: Principal,
        chat: ChatRequest,
        completion_id: str,
        created: int,
    ) -> web.StreamResponse:
        def chunk(delta: dict, finish: str | None, usage=None, choices=True) -> bytes:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if choices
                else [],
            }
            if chat.include_usage:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

        pieces = self._calls.stream(
            TRAINING,
            "StreamGenerate",
            training_service_pb.StreamGenerateRequest(generate=chat.generate),
            who,
        )
        try:
            # The first message before any byte goes out: a request the trainer
            # refuses (unknown model, bad field) gets its own status code.
            first = await anext(pieces, None)
        except grpc.aio.AioRpcError as err:
            await pieces.aclose()
            raise self._error(err, chat) from None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": ""}, None))
        done = None
        try:
            message = first
            while message is not None:
                if message.HasField("done"):
                    done = _completion(message.done)
                elif message.text:
                    await response.write(chunk({"content": message.text}, None))
                message = await anext(pieces, None)
        except (OpenAIError, ServiceError, grpc.aio.AioRpcError) as exc:
            await response.write(_error_event(self._calls, exc))
            await response.write_eof()
            return response
        finally:
            await pieces.aclose()
        if done is None:
            await response.write(
                _error_event(
                    self._calls,
                    ServiceError(
                        grpc.StatusCode.UNAVAILABLE,
                        "the generation ended early",
                        reason=Reason.GENERATION_FAILED,
                    ),
                )
            )
            await response.write_eof()
            return response
        await response.write(chunk({}, done.finish_reason))
        if chat.include_usage:
            await response.write(chunk({}, None, usage=_usage(done), choices=False))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/chat/completions", authenticated_here(self.create))


def _completion(reply: training_service_pb.GenerateResponse) -> Completion:
    # The trainer cut the text at a stop string; "cancelled" cannot reach a caller.
    finish = "length" if reply.finish_reason == "length" else "stop"
    return Completion(reply.text, finish, reply.prompt_tokens, reply.generated_tokens)


def _usage(done: Completion) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _error_event(calls: TrainerCalls, exc: BaseException) -> bytes:
    """An error after the stream began, as OpenAI sends one (`data: {"error": …}`)."""
    if isinstance(exc, OpenAIError):
        status, param = exc.status, exc.param
    elif isinstance(exc, grpc.aio.AioRpcError):
        status, param = calls.link.status_of(exc), None
    else:
        status, param = status_from_exception(exc), None
    _, body, _ = error_body(status, param)
    return f"data: {json.dumps(body)}\n\n".encode()
