"""HTTP routes from the `google.api.http` annotations, and requests built from HTTP.

Read at start-up from the generated descriptors: a path template such as
`/v1/jobs/{job_id}:cancel` becomes an aiohttp route, its variables and the
query parameters set request fields (nested paths, repeated fields, enums by
name), and the body fills the request (`body: "*"`) or one field of it.
Mistakes are INVALID_ARGUMENT naming the parameter and the value.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tunewire.errors import FieldViolation, invalid_argument
from tunewire.gateway import json_body
from tunewire.gateway.json_fields import unknown_fields
from tunewire.gateway.methods import Method

HTTP_VERBS = ("get", "put", "post", "delete", "patch")
_INT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class HttpRoute:
    verb: str  # "GET", "POST", ...
    template: str  # as annotated: "/v1/jobs/{job_id}:cancel"
    aiohttp_path: str  # "/v1/jobs/{v0:[^/]+}:cancel"
    variables: dict[str, str]  # aiohttp variable name -> request field path
    body: str  # "", "*" or a field name
    response_body: str
    method: Method


def routes_for(methods: dict[str, Method]) -> list[HttpRoute]:
    routes = []
    for method in methods.values():
        options = method.descriptor.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        rule = options.Extensions[annotations_pb2.http]
        for binding in (rule, *rule.additional_bindings):
            routes.append(_route(method, binding))
    return routes


def _route(method: Method, rule: http_pb2.HttpRule) -> HttpRoute:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in HTTP_VERBS:
        verb, template = kind.upper(), getattr(rule, kind)
    else:
        raise ValueError(f"{method.path}: google.api.http rule without a pattern")
    path, variables = compile_template(template)
    for field_path in variables.values():
        _field_chain(method.request_class.DESCRIPTOR, field_path, where=f"{method.path} {template}")
    if rule.body not in ("", "*"):
        _field_chain(method.request_class.DESCRIPTOR, rule.body, where=f"{method.path} body")
    return HttpRoute(verb, template, path, variables, rule.body, rule.response_body, method)


def compile_template(template: str) -> tuple[str, dict[str, str]]:
    """A google.api.http path template as an aiohttp path with regex variables.
    `{a.b}` and `{a=*}` match one segment, `{a=**}` the rest, `{a=x/*}` its pattern."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with '/'")
    variables: dict[str, str] = {}
    out, pos = [], 0
    for match in _VARIABLE.finditer(template):
        out.append(_literal(template[pos : match.start()], variables))
        name = f"v{len(variables)}"
        variables[name] = match.group(1)
        out.append(f"{{{name}:{_segments_regex(match.group(2) or '*')}}}")
        pos = match.end()
    out.append(_literal(template[pos:], variables))
    return "".join(out), variables


def _literal(text: str, variables: dict[str, str]) -> str:
    # Bare wildcard segments match like variables whose value is not used.
    parts = []
    for segment in text.split("/"):
        if segment in ("*", "**"):
            name = f"v{len(variables)}"
            variables[name] = ""
            segment = f"{{{name}:{_segments_regex(segment)}}}"
        parts.append(segment)
    return "/".join(parts)


def _segments_regex(pattern: str) -> str:
    return "/".join(
        "[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s) for s in pattern.split("/")
    )


def _field_chain(descriptor: Descriptor, path: str, where: str) -> list[FieldDescriptor]:
    chain = []
    for i, name in enumerate(path.split(".")):
        field = descriptor.fields_by_name.get(name)
        if field is None:
            raise ValueError(f"{where}: {descriptor.full_name} has no field {name!r}")
        chain.append(field)
        if i < len(path.split(".")) - 1:
            if field.message_type is None or _is_repeated(field):
                raise ValueError(f"{where}: {name!r} is not a message field")
            descriptor = field.message_type
    return chain


def _is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 7 dropped `label`
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


# ---- building a request ------------------------------------------------------------------


def set_from_strings(message: Message, path: str, values: list[str], param: str) -> None:
    """Sets the field at dotted `path` from text (a path variable or query values)."""
    try:
        chain = _field_chain(message.DESCRIPTOR, path, where="")
    except ValueError:
        raise invalid_argument(
            [FieldViolation(param, f"{message.DESCRIPTOR.name} has no field {path!r}")],
            f"unknown parameter {param!r}: {message.DESCRIPTOR.name} has no field {path!r}",
        ) from None
    target = message
    for field in chain[:-1]:
        target = getattr(target, field.name)
    field = chain[-1]
    if field.message_type is not None and not field.message_type.GetOptions().map_entry:
        raise invalid_argument(
            [
                FieldViolation(
                    param, "a message field cannot be set from the URL; send it in the body"
                )
            ]
        )
    if not _is_repeated(field) and len(values) > 1:
        raise invalid_argument(
            [FieldViolation(param, f"given {len(values)} times but takes one value")]
        )
    for value in values:
        try:
            if _is_repeated(field):
                getattr(target, field.name).append(_convert(field, value, param))
            else:
                setattr(target, field.name, _convert(field, value, param))
        except (ValueError, TypeError) as exc:  # out of range for the field's type
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise invalid_argument(
                [FieldViolation(param, f"{shown!r} does not fit: {exc}")]
            ) from None


def _convert(field: FieldDescriptor, text: str, param: str):
    kind = field.type
    try:
        if kind == FieldDescriptor.TYPE_STRING:
            return text
        if kind == FieldDescriptor.TYPE_BOOL:
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError
        if kind in _INT_TYPES:
            return int(text)
        if kind in _FLOAT_TYPES:
            return float(text)
        if kind == FieldDescriptor.TYPE_ENUM:
            return _enum_value(field, text)
        if kind == FieldDescriptor.TYPE_BYTES:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        pass
    raise invalid_argument([FieldViolation(param, f"{text!r} is not a valid {_type_name(field)}")])


def _enum_value(field: FieldDescriptor, text: str) -> int:
    """An enum by number, by name, or by name without the type's prefix in any
    case: 7, JOB_STATE_CANCELLED, cancelled."""
    enum = field.enum_type
    if text.lstrip("-").isdigit():
        return int(text)
    names = [v.name for v in enum.values]
    prefix = _common_prefix(names)
    for candidate in (text, text.upper(), prefix + text.upper()):
        if candidate in enum.values_by_name:
            return enum.values_by_name[candidate].number
    raise ValueError(f"{text!r} is not a {enum.name}")


def _common_prefix(names: list[str]) -> str:
    """JOB_STATE_ for JobState: the shared prefix up to its last underscore."""
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""  # noqa: RUF071 - by character, on purpose
    return prefix[: prefix.rfind("_") + 1]


def _type_name(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        values = ", ".join(v.name for v in field.enum_type.values)
        return f"{field.enum_type.name} (one of {values})"
    if field.type in _INT_TYPES:
        return "integer"
    if field.type in _FLOAT_TYPES:
        return "number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "boolean (true or false)"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "base64 value"
    return "value"


def parse_json_into(message: Message, text: str, where: str) -> None:
    """Fills `message` from JSON (proto3 JSON: field names or their camelCase),
    read within json_body's limits; a refusal names the field it is about."""
    if not text.strip():
        return
    value = json_body.loads(text, where)
    if not isinstance(value, dict):
        raise invalid_argument([FieldViolation(where, "must be a JSON object")])
    unknown = unknown_fields(message.DESCRIPTOR, text, where)
    if unknown:
        raise invalid_argument(unknown, f"{unknown[0].field}: {unknown[0].description}")
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        # protobuf's own words; TypeError and the like come from a list or null
        # where it wants an object, which it does not catch itself.
        field = _parse_error_field(str(exc), where)
        raise invalid_argument(
            [FieldViolation(field, str(exc))], f"invalid {field}: {exc}"
        ) from None


_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")


def _parse_error_field(text: str, where: str) -> str:
    """`spec.hyperparameters.epochs` from protobuf's "Failed to parse spec field:
    Failed to parse hyperparameters field: ..." (`where` when it names none)."""
    names = _FAILED_FIELD.findall(text)
    return ".".join(names) if names else where


def build_request(
    route: HttpRoute, path_values: dict[str, str], query, body: bytes | None
) -> Message:
    """The request message of an HTTP call: body first, then path variables (which
    win over the body, as in grpc-gateway), then query parameters."""
    request = route.method.request_class()
    if body is not None and route.body:
        if route.body == "*":
            parse_json_into(request, _text(body), "body")
        else:
            field = request.DESCRIPTOR.fields_by_name[route.body.split(".")[0]]
            _set_body_field(request, route.body, field, body)
    for name, field_path in route.variables.items():
        if field_path:
            set_from_strings(request, field_path, [path_values[name]], field_path)
    if query:
        if route.body == "*":
            raise invalid_argument(
                [
                    FieldViolation(
                        next(iter(query)),
                        "this route takes its fields in the JSON body, not the URL",
                    )
                ]
            )
        bound = {p for p in route.variables.values() if p} | ({route.body} if route.body else set())
        for param in dict.fromkeys(query):  # a multidict repeats a key per value
            if param in bound:
                raise invalid_argument(
                    [FieldViolation(param, "is set by the path or body, not the query")]
                )
            set_from_strings(request, param, query.getall(param), param)
    return request


def _set_body_field(request: Message, path: str, field: FieldDescriptor, body: bytes) -> None:
    if field.type == FieldDescriptor.TYPE_BYTES and "." not in path:
        setattr(request, path, body)
    elif field.message_type is not None and "." not in path:
        parse_json_into(getattr(request, path), _text(body), "body")
    else:
        parse_json_into(request, f'{{"{path}": {_text(body)}}}', "body")


def _text(body: bytes) -> str:
    return json_body.decode(body)


def field_path_named(descriptor: Descriptor, name: str, depth: int = 2) -> tuple[str, ...] | None:
    """Where a field called `name` is: in the message itself or a message field
    of it (WatchTrainingJobResponse → ("event", "sequence"))."""
    if name in descriptor.fields_by_name:
        return (name,)
    if depth > 1:
        for field in descriptor.fields:
            if field.message_type is not None and not _is_repeated(field):
                inner = field_path_named(field.message_type, name, depth - 1)
                if inner:
                    return (field.name, *inner)
    return None
