"""OpenAI's chat completion body → tunewire's GenerateRequest.

Parameters tunewire honours map onto the request; those it cannot honour are
refused with a 400 when set to anything but their neutral value (rather than
silently ignored); bookkeeping ones (`user`, `metadata`, `store`, ...) are
accepted and have no effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai.errors import bad_request
from tunewire.v1 import training_service_pb2 as training_service_pb

HONOURED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stream",
    "stream_options",
    "stop",
    "n",
}
# Accepted; they change nothing a local server does.
BOOKKEEPING = {
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "parallel_tool_calls",
    "tunewire",
}
# Accepted only at the value that means "off".
NEUTRAL = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "modalities": (["text"],),
    "response_format": ({"type": "text"},),
    "reasoning_effort": (),
    "audio": (),
    "prediction": (),
    "web_search_options": (),
    "verbosity": (),
}
ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
MAX_MESSAGES = 1024
MAX_STOP = 4
MAX_TOKENS = 4096


@dataclass
class ChatRequest:
    model: str
    generate: training_service_pb.GenerateRequest
    stream: bool
    include_usage: bool


def _content(message: dict, where: str) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(
            f"{where}.content must be a string or an array of parts", f"{where}.content"
        )
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise bad_request(
                f"{where}.content[{j}]: only text parts are supported by this server",
                f"{where}.content[{j}]",
            )
        texts.append(fields.string(part, "text", param=f"{where}.content[{j}].text", required=True))
    return "".join(texts)


def _messages(body: dict) -> list[training_service_pb.ChatMessage]:
    items = fields.array(body, "messages", max_len=MAX_MESSAGES)
    if not items:
        raise bad_request("Missing required parameter: 'messages'.", "messages")
    out = []
    for i, message in enumerate(items):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", where)
        role = fields.string(message, "role", param=f"{where}.role", required=True)
        if role not in ROLES:
            raise bad_request(
                f"{where}.role must be one of {', '.join(ROLES)}, got {role[:40]!r}",
                f"{where}.role",
            )
        if message.get("tool_calls"):
            raise bad_request(f"{where}.tool_calls: tools are not supported", f"{where}.tool_calls")
        out.append(
            training_service_pb.ChatMessage(role=ROLES[role], content=_content(message, where))
        )
    return out


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop must be a string or an array of non-empty strings", "stop")
    if len(stops) > MAX_STOP:
        raise bad_request(f"stop may hold at most {MAX_STOP} sequences, got {len(stops)}", "stop")
    return stops


def _refuse_unsupported(body: dict) -> None:
    for name, value in body.items():
        if name in HONOURED or name in BOOKKEEPING or value is None:
            continue
        if name not in NEUTRAL:
            raise bad_request(f"Unrecognized request argument supplied: {name}", name)
        if value not in NEUTRAL[name]:
            raise bad_request(f"{name} is not supported by this server", name)


def chat_request(body: dict) -> ChatRequest:
    _refuse_unsupported(body)
    model = fields.string(body, "model", required=True, max_len=4096)
    n = fields.integer(body, "n", low=1, high=1)
    del n  # one choice per request, as the range says
    max_tokens = fields.integer(body, "max_completion_tokens", low=1, high=MAX_TOKENS)
    if max_tokens is None:
        max_tokens = fields.integer(body, "max_tokens", low=1, high=MAX_TOKENS)
    temperature = fields.number(body, "temperature", low=0.0, high=2.0)
    top_p = fields.number(body, "top_p", low=0.0, high=1.0, low_open=True)
    seed = fields.integer(body, "seed", low=-(2**63), high=2**63 - 1)
    stream = bool(fields.boolean(body, "stream"))
    options = fields.obj(body, "stream_options") or {}
    fields.refuse_unknown(options, {"include_usage", "include_obfuscation"}, "stream_options.")
    include_usage = bool(
        fields.boolean(options, "include_usage", param="stream_options.include_usage")
    )
    generate = training_service_pb.GenerateRequest(
        messages=_messages(body),
        # Without a limit OpenAI generates until the model stops: here at most
        # MAX_TOKENS, the most one request may ask for.
        max_tokens=max_tokens or MAX_TOKENS,
        # OpenAI samples at temperature 1 unless told otherwise.
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=seed or 0,
        stop=_stop(body),
    )
    return ChatRequest(model=model, generate=generate, stream=stream, include_usage=include_usage)
