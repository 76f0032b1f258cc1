"""Typed records to JSON and back, strictly: the encoding both sides of the worker protocol use.

A record is a dataclass whose fields are bool, int, float, str, an `Enum` of
strings, a list, `X | None`, or another record. Decoding checks everything: an
unknown field, a missing one or a value of the wrong type is a `DecodeError`
naming the field's path ("hyperparameters.batch_size"), never a KeyError
later. A str field whose metadata names a proto enum (`words=...`) takes only
that enum's words (`tunewire.enum_words`). Floats keep NaN and the infinities
(`json` writes them as NaN / Infinity / -Infinity and reads them back), so a
diverged loss arrives as NaN, not as null.
This module must not import mlx: the daemon uses it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar

from tunewire import enum_words

# Both sides refuse to talk across versions; bump it with any change to a record.
PROTOCOL_VERSION = 3

T = TypeVar("T")


class DecodeError(ValueError):
    """A value that does not fit its record; the message names the field's path."""


def encode(record: Any) -> Any:
    """A record as JSON-ready values (dicts, lists, str, numbers, None); enums become their value."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: encode(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, (list, tuple)):
        return [encode(v) for v in record]
    return record


def dumps(value: Any) -> str:
    """One line of JSON; non-finite floats are written as NaN / Infinity (read back by `loads`)."""
    return json.dumps(value, allow_nan=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from None


def decode(cls: type[T], data: Any, path: str = "") -> T:
    """`data` (as `loads` returns it) as a `cls` record, or DecodeError naming the bad field."""
    if not isinstance(data, dict):
        raise DecodeError(f"{path or cls.__name__} must be an object, got {_show(data)}")
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise DecodeError(f"unknown field {path}{unknown[0]}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        where = path + name
        if name not in data:
            raise DecodeError(f"field {where} is missing")
        values[name] = _value(hints[name], data[name], where, f.metadata)
    return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """A record's field types, resolved once (`from __future__ import annotations`)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _value(hint: Any, value: Any, path: str, metadata: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [t for t in typing.get_args(hint) if t is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) != 1:
            raise TypeError(f"{path}: only `X | None` unions are supported")
        hint, origin = options[0], typing.get_origin(options[0])
    if value is None:
        raise DecodeError(f"{path} must not be null")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise DecodeError(f"{path} must be a list, got {_show(value)}")
        return [_value(item, v, f"{path}[{i}]", metadata) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return decode(hint, value, path + ".")  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in hint)
            raise DecodeError(f"{path} must be one of {choices}; got {_show(value)}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{path} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError(f"{path} must be a whole number, got {_show(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DecodeError(f"{path} must be a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise DecodeError(f"{path} must be text, got {_show(value)}")
        proto_enum = metadata.get("words")
        if proto_enum is not None and value not in enum_words.words(proto_enum):
            choices = ", ".join(enum_words.words(proto_enum))
            raise DecodeError(f"{path} must be one of {choices}; got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported field type {hint!r}")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return repr(value)
