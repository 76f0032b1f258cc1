"""Request bodies as JSON, read the one careful way every HTTP route shares.

Python's `json` gives a RecursionError for deep nesting, a ValueError with
advice about `sys.set_int_max_str_digits` for a 5,000-digit number, and takes
`NaN` and `Infinity`, which JSON does not have, and decodes a `\ud800` escape
into a lone surrogate that no UTF-8 encoder (protobuf's included) will write
back. Here each of those is an
INVALID_ARGUMENT that names the field (or `body`) and the limit, before any
route looks at the value.
"""

from __future__ import annotations

import json

from tunewire.errors import FieldViolation, ServiceError, invalid_argument

# Deeper than any request of ours (the job spec is 4 levels) by a wide margin.
MAX_DEPTH = 32
# Longer numbers are refused before Python reads them (its int parsing is
# quadratic); shorter ones that are still too big for their field (2**70
# epochs) reach that field's own check, which names it.
MAX_INTEGER_DIGITS = 100
MAX_NUMBER_CHARS = 100


class _Refused(Exception):
    def __init__(self, field: str, description: str):
        super().__init__(description)
        self.violation = FieldViolation(field, description)


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _Refused(
            "body", f"has an integer of {digits} digits; at most {MAX_INTEGER_DIGITS} are allowed"
        )
    return int(text)


def _number(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(
            "body", f"has a number of {len(text)} characters; at most {MAX_NUMBER_CHARS}"
        )
    return float(text)


def _constant(name: str):
    raise _Refused("body", f"has {name}, which is not JSON: numbers must be finite")


def _object(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(key, "is given twice in one object")
        out[key] = value
    return out


def decode(data: bytes | str, where: str = "body") -> str:
    """The body as text, or INVALID_ARGUMENT naming the first byte that is not UTF-8."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid_argument(
            [FieldViolation(where, f"is not UTF-8: byte {exc.start} is 0x{data[exc.start]:02x}")]
        ) from None


def loads(data: bytes | str, where: str = "body") -> object:
    """The JSON value of a body, within the limits above."""
    text = decode(data, where)
    try:
        value = json.loads(
            text,
            parse_int=_integer,
            parse_float=_number,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except _Refused as exc:
        raise invalid_argument([exc.violation]) from None
    except RecursionError:
        raise _too_deep(where) from None
    except json.JSONDecodeError as exc:
        raise invalid_argument(
            [
                FieldViolation(
                    where, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                )
            ]
        ) from None
    except ValueError as exc:  # anything else the decoder refuses
        raise invalid_argument([FieldViolation(where, f"is not valid JSON: {exc}")]) from None
    if _depth(value) > MAX_DEPTH:
        raise _too_deep(where)
    surrogate = lone_surrogate(value, where)
    if surrogate is not None:
        raise invalid_argument([surrogate])
    return value


def lone_surrogate(value: object, where: str = "body") -> FieldViolation | None:
    """The first string (or key) holding a lone surrogate such as `"\\ud800"`: valid
    JSON text but not Unicode text, so no UTF-8 encoder (protobuf's, aiohttp's) can
    write it on; a route given one answered 500 before. Iterative, like `_depth`."""
    pending = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            bad = _surrogate_at(item)
            if bad is not None:
                return FieldViolation(
                    path,
                    f"holds a lone surrogate \\u{ord(item[bad]):04x} at character {bad}: "
                    "strings must be valid Unicode",
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if _surrogate_at(key) is not None:
                    return FieldViolation(path, "has a key holding a lone surrogate")
                pending.append((child, key if path == "body" else f"{path}.{key}"))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _surrogate_at(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _too_deep(where: str) -> ServiceError:
    return invalid_argument(
        [
            FieldViolation(
                where, f"is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects"
            )
        ]
    )


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in `value` (without recursion)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        pending.extend((child, level + 1) for child in children)
    return deepest
