"""protos/ stands alone: a copy of the folder compiles with protoc and buf and
nothing else; every file carries the language options; every field documented
as required or output only is annotated so (google.api.field_behavior)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
OURS = sorted(p.relative_to(PROTOS).as_posix() for p in (PROTOS / "tunewire").rglob("*.proto"))
LANGUAGE_OPTIONS = (
    "go_package",
    "java_package",
    "java_multiple_files",
    "java_outer_classname",
    "csharp_namespace",
    "objc_class_prefix",
    "php_namespace",
    "ruby_package",
)


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    """Our files compiled from a copy of protos/ alone, with their comments."""
    copy = tmp_path_factory.mktemp("clone") / "protos"
    shutil.copytree(PROTOS, copy)
    out = copy.parent / "set.binpb"
    # grpc_tools.protoc adds only the well-known types (google/protobuf/*), as
    # every protoc installation does; nothing from the Python environment.
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{copy}", "--include_source_info"]
    subprocess.run(
        [*command, f"--descriptor_set_out={out}", *OURS, "google/rpc/error_details.proto"],
        check=True,
        cwd=copy,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_protoc_compiles_a_copy_of_protos_alone(described):
    names = {f.name for f in described.file}
    assert set(OURS) | {"google/rpc/error_details.proto"} <= names
    vendored = {p.relative_to(PROTOS).as_posix() for p in (PROTOS / "google").rglob("*.proto")}
    assert {"google/api/annotations.proto", "google/rpc/status.proto"} <= vendored
    assert "Apache License" in (PROTOS / "google" / "LICENSE").read_text()


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed")
def test_buf_builds_a_copy_of_protos_alone(tmp_path):
    shutil.copytree(PROTOS, tmp_path / "protos")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    for command in (["build", "-o", "image.binpb"], ["lint"]):
        result = subprocess.run(
            ["npx", "--yes", "@bufbuild/buf", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert result.returncode == 0, f"buf {command[0]}: {result.stderr}"
    assert (tmp_path / "image.binpb").stat().st_size > 0


def test_every_file_has_the_language_options(described):
    for f in (f for f in described.file if f.name in OURS):
        missing = [o for o in LANGUAGE_OPTIONS if not f.options.HasField(o)]
        assert not missing, f"{f.name} lacks {missing}"
        assert f.options.go_package.endswith(";tunewirev1")


def _documented_fields(f: descriptor_pb2.FileDescriptorProto):
    """(message.field, leading comment, field) for every field of the file."""
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in f.source_code_info.location
    }

    def walk(messages, path, prefix):
        for i, message in enumerate(messages):
            here = (*path, i)
            for j, field in enumerate(message.field):
                yield f"{prefix}{message.name}.{field.name}", comments.get((*here, 2, j), ""), field
            yield from walk(message.nested_type, (*here, 3), f"{prefix}{message.name}.")

    yield from walk(f.message_type, (4,), "")


def test_required_and_output_only_fields_are_annotated(described):
    expected = {
        "Required.": field_behavior_pb2.REQUIRED,
        "Output only.": field_behavior_pb2.OUTPUT_ONLY,
    }
    checked = 0
    for f in (f for f in described.file if f.name in OURS):
        for name, comment, field in _documented_fields(f):
            behaviors = list(field.options.Extensions[field_behavior_pb2.field_behavior])
            for prefix, behavior in expected.items():
                if comment.startswith(prefix):
                    assert behavior in behaviors, f"{f.name}: {name} is documented {prefix!r}"
                    checked += 1
    assert checked > 30  # the spec's required fields and the resources' output-only ones
