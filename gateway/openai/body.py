"""Reading OpenAI request bodies: JSON objects and their typed fields.

Each reader names the parameter as OpenAI's reference names it (`param` in the
error) and the limit it broke, so a client's mistake is a 400 that says what to
change, never a 500.
"""

from __future__ import annotations

import json
import math

from aiohttp import web

from tunewire.gateway.json_body import lone_surrogate
from tunewire.gateway.openai.errors import bad_request

MAX_JSON_DEPTH = 64


def _depth(value, limit: int) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


async def json_object(request: web.Request) -> dict:
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the request body is not valid UTF-8 (byte {exc.start})", None) from None
    if not text.strip():
        raise bad_request("the request body is empty; send a JSON object", None)
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})",
            None,
        ) from None
    except (RecursionError, ValueError) as exc:
        raise bad_request(f"the request body cannot be read: {_short(exc)}", None) from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", None)
    if _depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise bad_request(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels", None)
    surrogate = lone_surrogate(body)
    if surrogate is not None:
        raise bad_request(f"{surrogate.field} {surrogate.description}", surrogate.field)
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def refuse_unknown(body: dict, known: set[str], where: str = "") -> None:
    """OpenAI answers an unknown parameter with 400; so do we (extras go under `tunewire`)."""
    for name in body:
        if name not in known:
            raise bad_request(
                f"Unrecognized request argument supplied: {where}{name}", f"{where}{name}"
            )


def string(
    body: dict, name: str, *, param: str | None = None, required: bool = False, max_len: int = 0
) -> str | None:
    param = param or name
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"Missing required parameter: '{param}'.", param)
        return None
    if not isinstance(value, str):
        raise bad_request(f"{param} must be a string, got {_shown(value)}", param)
    if required and not value:
        raise bad_request(f"{param} must not be empty", param)
    if max_len and len(value) > max_len:
        raise bad_request(f"{param} must be at most {max_len} characters, got {len(value)}", param)
    return value


def integer(body: dict, name: str, *, param: str | None = None, low: int, high: int) -> int | None:
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and low <= value <= high:
            return int(value)
        raise bad_request(f"{param} must be an integer, got {_shown(value)}", param)
    if not low <= value <= high:
        raise bad_request(f"{param} must be between {low} and {high}, got {value}", param)
    return value


def number(
    body: dict,
    name: str,
    *,
    param: str | None = None,
    low: float,
    high: float,
    low_open: bool = False,
) -> float | None:
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"{param} must be a number, got {_shown(value)}", param)
    value = float(value)
    ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise bad_request(f"{param} must be in {bracket}{low:g}, {high:g}], got {value:g}", param)
    return value


def boolean(body: dict, name: str, *, param: str | None = None) -> bool | None:
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{param} must be true or false, got {_shown(value)}", param)
    return value


def obj(body: dict, name: str, *, param: str | None = None) -> dict | None:
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"{param} must be an object, got {_shown(value)}", param)
    return value


def array(body: dict, name: str, *, param: str | None = None, max_len: int) -> list | None:
    param = param or name
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request(f"{param} must be an array, got {_shown(value)}", param)
    if len(value) > max_len:
        raise bad_request(f"{param} must have at most {max_len} items, got {len(value)}", param)
    return value


def query_limit(request: web.Request, default: int, high: int) -> int:
    text = request.query.get("limit")
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= high:
        raise bad_request(f"limit must be an integer between 1 and {high}, got {text!r}", "limit")
    return int(text)
