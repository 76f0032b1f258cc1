"""A pasted training YAML → a job spec, with the keys `tunewire train` takes
(tunewire.client.train_config owns that vocabulary; nothing here repeats it).

In the browser the data is a dataset uploaded through the console, so a
top-level `data:` (a path on the user's machine for `tunewire train`) is set
aside rather than looked up on the gateway's disk; the chosen dataset takes
its place.
"""

from __future__ import annotations

import re

import yaml
from google.protobuf import json_format

from tunewire.client.train_config import ConfigError, parse_config
from tunewire.errors import FieldViolation, invalid_argument

SOURCE = "config"
_PROBLEM = re.compile(rf"^{SOURCE}(?::(\d+))?: (.*)$", re.S)
_FIELD_FIRST = re.compile(r"^([A-Za-z_][\w.\[\]]*): (.*)$", re.S)
_UNKNOWN_KEY = re.compile(r"unknown key '([^']+)'")
_DATASET_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _without_data(text: str) -> tuple[str, bool]:
    """The text with its top-level `data:` entry blanked (line numbers kept)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return text, False  # parse_config words the YAML error
    if not isinstance(root, yaml.MappingNode):
        return text, False
    lines = text.split("\n")
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "data":
            first, last = key.start_mark.line, max(value.end_mark.line, key.start_mark.line)
            if value.end_mark.column == 0 and last > first:
                last -= 1
            for i in range(first, last + 1):
                lines[i] = ""
            return "\n".join(lines), True
    return text, False


def violations_of(error: ConfigError) -> list[FieldViolation]:
    """train_config's "config:LINE: field: why" problems as field violations."""
    found = []
    for problem in str(error).split("; "):
        match = _PROBLEM.match(problem)
        line, text = (match.group(1), match.group(2)) if match else (None, problem)
        field, why = "yaml", text
        if named := _FIELD_FIRST.match(text):
            field, why = named.group(1), named.group(2)
        elif unknown := _UNKNOWN_KEY.search(text):
            field = unknown.group(1)
        found.append(FieldViolation(field, f"line {line}: {why}" if line else why))
    return found


def spec_from_yaml(text: str, dataset_id: str) -> dict:
    """{"spec": the spec as JSON with the protos' names, "origins": spec path →
    the YAML key that set it, "notes": keys accepted but not used}."""
    try:
        return _spec_from_yaml(text, dataset_id)
    except RecursionError:
        # PyYAML composes recursively: 10,000 nested "- " was a 500.
        raise invalid_argument([FieldViolation("yaml", "is nested too deeply")]) from None


def _spec_from_yaml(text: str, dataset_id: str) -> dict:
    text, had_data = _without_data(text)
    if had_data and not dataset_id:
        raise invalid_argument(
            [FieldViolation("data", "choose an uploaded dataset in the console instead of a path")]
        )
    if dataset_id:
        if not _DATASET_ID.match(dataset_id):
            raise invalid_argument([FieldViolation("dataset_id", "is not a dataset id")])
        if not re.search(r"^dataset\s*:", text, re.M):
            text += f"\ndataset: {{dataset_id: {dataset_id}}}\n"
    try:
        config = parse_config(text, SOURCE)
        spec = config.to_spec(dataset_id)
    except ConfigError as exc:
        raise invalid_argument(violations_of(exc), "the YAML cannot be used") from None
    return {
        "spec": json_format.MessageToDict(spec, preserving_proto_field_name=True),
        "origins": dict(config.origins),
        "notes": list(config.notes),
    }
