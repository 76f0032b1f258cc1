"""Job specs from plain dictionaries (YAML, JSON, keyword arguments).

Keys mirror `tunewire.v1.TrainingJobSpec`: field names (`batch_size`) or their
JSON names (`batchSize`), nested as in the proto. Enums take short names in any
case (`method: qlora`, `optimizer: adamw`) as well as full ones. Everything
wrong is reported at once, each problem with its path and, for a misspelt key,
the nearest valid one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from tunewire import enum_words
from tunewire.v1 import training_job_pb2 as training_job_pb

_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
}
_FLOATS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_INT32_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32}


class SpecError(ValueError):
    """Problems of a spec, each as (path, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {why}" for path, why in problems))


def suggest(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower().replace("_", ""): c for c in choices}
        close = difflib.get_close_matches(
            word.lower().replace("_", "").replace("-", ""), lowered, n=1, cutoff=0.6
        )
        close = [lowered[c] for c in close]
    return f" (did you mean {close[0]!r}?)" if close else ""


def spec_from_dict(data: Mapping) -> training_job_pb.TrainingJobSpec:
    """A TrainingJobSpec from a mapping, or SpecError listing every problem."""
    spec = training_job_pb.TrainingJobSpec()
    problems: list[tuple[str, str]] = []
    fill_message(spec, data, "", problems)
    if problems:
        raise SpecError(problems)
    return spec


def field_names(descriptor: Descriptor) -> list[str]:
    return [f.name for f in descriptor.fields]


def fill_message(message: Message, data, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(data, Mapping):
        problems.append((path or "spec", f"must be a mapping of keys to values, got {_kind(data)}"))
        return
    descriptor = message.DESCRIPTOR
    by_name = {f.name: f for f in descriptor.fields}
    by_name.update({f.json_name: f for f in descriptor.fields})
    seen: dict[str, str] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        fd = by_name.get(key) if isinstance(key, str) else None
        if fd is None:
            problems.append((where, "unknown key" + suggest(str(key), field_names(descriptor))))
            continue
        if fd.name in seen:
            problems.append((where, f"given twice (also as {seen[fd.name]!r})"))
            continue
        seen[fd.name] = key
        if fd.containing_oneof is not None:
            other = next(
                (
                    s
                    for s in seen
                    if s != fd.name and by_name[s].containing_oneof is fd.containing_oneof
                ),
                None,
            )
            if other:
                problems.append(
                    (
                        where,
                        f"give only one of {', '.join(f.name for f in fd.containing_oneof.fields)}",
                    )
                )
                continue
        if value is None:
            continue  # YAML's `key:` with nothing after it: leave the default
        _fill_field(message, fd, value, where, problems)


def _fill_field(message: Message, fd: FieldDescriptor, value, where: str, problems) -> None:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        if not isinstance(value, Mapping):
            problems.append((where, f"must be a mapping, got {_kind(value)}"))
            return
        target = getattr(message, fd.name)
        for k, v in value.items():
            if isinstance(v, (dict, list)) or v is None:
                problems.append((f"{where}.{k}", f"must be a plain value, got {_kind(v)}"))
            else:
                target[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
        return
    if fd.is_repeated:
        if isinstance(value, str) and fd.type == FieldDescriptor.TYPE_STRING:
            value = [value]
        if not isinstance(value, list):
            problems.append((where, f"must be a list, got {_kind(value)}"))
            return
        target = getattr(message, fd.name)
        for i, item in enumerate(value):
            if fd.message_type is not None:
                fill_message(target.add(), item, f"{where}[{i}]", problems)
            else:
                converted = scalar(fd, item, f"{where}[{i}]", problems)
                if converted is not None:
                    target.append(converted)
        return
    if fd.message_type is not None:
        fill_message(getattr(message, fd.name), value, where, problems)
        # An empty mapping still marks the sub-message as set (a oneof source, say).
        getattr(message, fd.name).SetInParent()
        return
    converted = scalar(fd, value, where, problems)
    if converted is not None:
        setattr(message, fd.name, converted)


def scalar(fd: FieldDescriptor, value, where: str, problems):
    """`value` as the field's type, or None after recording why not."""
    if fd.enum_type is not None:
        return _enum(fd.enum_type, value, where, problems)
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        problems.append((where, f"must be true or false, got {value!r}"))
        return None
    if fd.type in _INTS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append((where, f"must be a whole number, got {value!r}"))
            return None
        limit = 2**31 if fd.type in _INT32_TYPES else 2**63
        if not -limit <= value < limit:
            problems.append((where, f"is out of range: {value}"))
            return None
        return value
    if fd.type in _FLOATS:
        # PyYAML reads `1e-4` (no dot) as a string; accept numbers written that way.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append((where, f"must be a number, got {value!r}"))
            return None
        return float(value)
    if fd.type == FieldDescriptor.TYPE_STRING:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            problems.append((where, f"must be text, got {_kind(value)}"))
            return None
        return value
    if fd.type == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes):
            problems.append((where, f"must be bytes, got {_kind(value)}"))
            return None
        return value
    problems.append((where, f"unsupported field type {fd.type}"))
    return None


def _enum(enum: EnumDescriptor, value, where: str, problems):
    short = enum_words.words(enum)
    if isinstance(value, int) and not isinstance(value, bool):
        if value in enum.values_by_number:
            return value
    elif isinstance(value, str):
        try:
            return enum_words.number(enum, value)
        except ValueError:
            pass
    choices = ", ".join(short)
    problems.append(
        (where, f"must be one of {choices}, got {value!r}" + suggest(str(value).lower(), short))
    )
    return None


def _kind(value) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
