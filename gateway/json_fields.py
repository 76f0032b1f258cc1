"""Unknown fields in a JSON body, named with the valid name nearest to each.

protobuf's own parser stops at the first unknown field with a message in its
terms (camelCase names, the message's full type); a client is better served by
`spec.hyperparameters.learning_rat: unknown field; did you mean learning_rate?`.
"""

from __future__ import annotations

import difflib
import json

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tunewire.errors import FieldViolation

MAX_REPORTED = 20
# Messages whose JSON form is not an object of their fields.
_SPECIAL = {
    "google.protobuf.Any",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}


def unknown_fields(descriptor: Descriptor, text: str, where: str) -> list[FieldViolation]:
    """A violation per unknown key in the JSON `text` of a `descriptor` message ([] if
    none, or if the text is not JSON at all: the parser then says what is wrong)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    found: list[FieldViolation] = []
    try:
        _walk(descriptor, value, "", found)
    except RecursionError:
        return found
    return [
        FieldViolation(f"{where}.{path}" if where != "body" else path, why)
        for path, why in found[:MAX_REPORTED]
    ]


def _walk(descriptor: Descriptor, value: object, prefix: str, found: list) -> None:
    if not isinstance(value, dict) or descriptor.full_name in _SPECIAL:
        return
    by_name = {f.name: f for f in descriptor.fields}
    by_name.update({f.json_name: f for f in descriptor.fields})
    for key, item in value.items():
        path = f"{prefix}{key or repr(key)}"  # an empty key is still named
        field = by_name.get(key)
        if field is None:
            names = [f.name for f in descriptor.fields]
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(names)}"
            found.append((path, f"unknown field{hint}"))
            continue
        if field.type != FieldDescriptor.TYPE_MESSAGE or item is None:
            continue
        child = field.message_type
        if child.GetOptions().map_entry:
            values = child.fields_by_name["value"]
            if values.type == FieldDescriptor.TYPE_MESSAGE and isinstance(item, dict):
                for k, v in item.items():
                    _walk(values.message_type, v, f"{path}[{k!r}].", found)
        elif field.is_repeated and isinstance(item, list):
            for i, element in enumerate(item):
                _walk(child, element, f"{path}[{i}].", found)
        else:
            _walk(child, item, f"{path}.", found)
