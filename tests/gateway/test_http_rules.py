"""Routes from the `google.api.http` annotations, and requests built from URL and body."""

from __future__ import annotations

import re

import grpc
import pytest
from multidict import MultiDict

from tunewire.errors import ServiceError
from tunewire.gateway.http_rules import (
    build_request,
    compile_template,
    field_path_named,
    routes_for,
)
from tunewire.gateway.methods import forwarded_methods
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

pytestmark = pytest.mark.timeout(30)

METHODS = forwarded_methods()
ROUTES = {(r.verb, r.template): r for r in routes_for(METHODS)}


def route(verb: str, template: str):
    return ROUTES[(verb, template)]


def test_every_annotated_rpc_has_its_route():
    annotated = {
        ("POST", "/v1/jobs"): "CreateTrainingJob",
        ("GET", "/v1/jobs/{job_id}"): "GetTrainingJob",
        ("GET", "/v1/jobs"): "ListTrainingJobs",
        ("POST", "/v1/jobs/{job_id}:cancel"): "CancelTrainingJob",
        ("POST", "/v1/jobs/{job_id}:pause"): "PauseTrainingJob",
        ("POST", "/v1/jobs/{job_id}:resume"): "ResumeTrainingJob",
        ("GET", "/v1/jobs/{job_id}/log"): "GetTrainingJobLog",
        ("GET", "/v1/jobs/{job_id}/events"): "WatchTrainingJob",
        ("GET", "/v1/jobs/{job_id}/checkpoints"): "ListCheckpoints",
        ("POST", "/v1/generate"): "Generate",
        ("POST", "/v1/generate:stream"): "StreamGenerate",
        ("GET", "/v1/jobs/{job_id}/artifact"): "DownloadArtifact",
        ("GET", "/v1/jobs/{job_id}/export"): "ExportArtifact",
        ("POST", "/v1/adapters:upload"): "UploadAdapter",
        ("GET", "/v1/info"): "GetServerInfo",
        ("POST", "/v1/datasets:upload"): "UploadDataset",
        ("POST", "/v1/datasets:validate"): "ValidateDataset",
        ("POST", "/v1/datasets/{dataset_id}:normalize"): "NormalizeDataset",
        ("GET", "/v1/datasets/{dataset_id}"): "GetDataset",
        ("GET", "/v1/datasets"): "ListDatasets",
        ("POST", "/v1/webhooks"): "CreateWebhook",
        ("GET", "/v1/webhooks"): "ListWebhooks",
        ("DELETE", "/v1/webhooks/{webhook_id}"): "DeleteWebhook",
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "ListWebhookDeliveries",
    }
    assert {key: r.method.name for key, r in ROUTES.items()} == annotated
    # Every forwarded RPC is reachable over HTTP.
    assert {r.method.path for r in ROUTES.values()} == set(METHODS)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/jobs/{job_id}", "/v1/jobs/job-abc", {"job_id": "job-abc"}),
        ("/v1/jobs/{job_id}:cancel", "/v1/jobs/job-abc:cancel", {"job_id": "job-abc"}),
        (
            "/v1/{name=projects/*/jobs/*}",
            "/v1/projects/p1/jobs/j2",
            {"name": "projects/p1/jobs/j2"},
        ),
        ("/v1/files/{path=**}", "/v1/files/a/b/c.txt", {"path": "a/b/c.txt"}),
        ("/v1/{spec.model}/x", "/v1/qwen/x", {"spec.model": "qwen"}),
    ],
)
def test_templates_match_their_paths(template, path, expected):
    aiohttp_path, variables = compile_template(template)
    regex = re.sub(r"\{(\w+):([^}]*)\}", r"(?P<\1>\2)", aiohttp_path)
    match = re.fullmatch(regex, path)
    assert match is not None
    assert {variables[k]: v for k, v in match.groupdict().items()} == expected


def test_templates_do_not_match_other_paths():
    aiohttp_path, _ = compile_template("/v1/jobs/{job_id}:cancel")
    regex = re.sub(r"\{(\w+):([^}]*)\}", r"(?P<\1>\2)", aiohttp_path)
    assert re.fullmatch(regex, "/v1/jobs/a/b:cancel") is None
    assert re.fullmatch(regex, "/v1/jobs/abc") is None


def test_query_parameters_fill_scalars_repeated_fields_and_enums_by_name():
    request = build_request(
        route("GET", "/v1/jobs"),
        {},
        MultiDict(
            [
                ("page_size", "5"),
                ("page_token", "10"),
                ("states", "JOB_STATE_RUNNING"),
                ("states", "queued"),
                ("states", "7"),
            ]
        ),
        None,
    )
    assert request == training_service_pb.ListTrainingJobsRequest(
        page_size=5,
        page_token="10",
        states=[
            training_job_pb.JOB_STATE_RUNNING,
            training_job_pb.JOB_STATE_QUEUED,
            training_job_pb.JOB_STATE_CANCELLED,
        ],
    )


def test_path_variables_win_over_the_body():
    request = build_request(
        route("POST", "/v1/jobs/{job_id}:cancel"),
        {"v0": "job-path"},
        MultiDict(),
        b'{"job_id": "job-body", "force": true}',
    )
    assert request == training_service_pb.CancelTrainingJobRequest(job_id="job-path", force=True)


def test_body_star_is_parsed_as_the_whole_request_in_either_json_spelling():
    body = (
        b'{"spec": {"model": "m", "hyperparameters": {"batchSize": 2, "max_seq_length": 64}, '
        b'"method": "TRAINING_METHOD_QLORA"}, "request_id": "r1"}'
    )
    request = build_request(route("POST", "/v1/jobs"), {}, MultiDict(), body)
    assert request.spec.model == "m"
    assert request.spec.hyperparameters.batch_size == 2
    assert request.spec.hyperparameters.max_seq_length == 64
    assert request.spec.method == training_job_pb.TRAINING_METHOD_QLORA
    assert request.request_id == "r1"
    empty = build_request(route("POST", "/v1/jobs/{job_id}:cancel"), {"v0": "j"}, MultiDict(), b"")
    assert empty == training_service_pb.CancelTrainingJobRequest(job_id="j")


def invalid(route_, path_values, query, body) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        build_request(route_, path_values, MultiDict(query), body)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value


def test_bad_query_values_name_the_parameter_and_the_value():
    err = invalid(route("GET", "/v1/jobs"), {}, [("page_size", "ten")], None)
    assert (
        err.violations[0].field == "page_size"
        and "'ten' is not a valid integer" in err.violations[0].description
    )
    err = invalid(route("GET", "/v1/jobs"), {}, [("states", "SLEEPING")], None)
    assert "'SLEEPING' is not a valid JobState" in err.violations[0].description
    assert "JOB_STATE_RUNNING" in err.violations[0].description
    err = invalid(route("GET", "/v1/jobs"), {}, [("page_sise", "1")], None)
    assert (
        err.violations[0].field == "page_sise"
        and "no field 'page_sise'" in err.violations[0].description
    )
    err = invalid(route("GET", "/v1/jobs"), {}, [("page_size", "1"), ("page_size", "2")], None)
    assert "given 2 times" in err.violations[0].description
    err = invalid(route("GET", "/v1/jobs"), {}, [("page_size", str(2**40))], None)
    assert err.violations[0].field == "page_size"
    err = invalid(
        route("GET", "/v1/jobs/{job_id}/events"), {"v0": "j"}, [("after_sequence", "-x")], None
    )
    assert err.violations[0].field == "after_sequence"
    err = invalid(route("GET", "/v1/jobs/{job_id}"), {"v0": "j"}, [("job_id", "other")], None)
    assert "set by the path" in err.violations[0].description


def test_bad_bodies_are_invalid_argument_with_the_reason():
    err = invalid(route("POST", "/v1/jobs"), {}, [], b'{"spec": {"modle": "x"}}')
    # The unknown field by its path, with the valid name nearest to it.
    assert err.violations[0].field == "spec.modle" and "'model'" in err.violations[0].description
    err = invalid(
        route("POST", "/v1/jobs"),
        {},
        [],
        b'{"spec": {"hyperparameters": {"epochs": 1099511627776}}}',
    )
    assert err.violations[0].field == "spec.hyperparameters.epochs"
    assert "out of range" in err.violations[0].description
    for raw, words in (
        (b"[" * 10_000 + b"]" * 10_000, "at most 32 levels"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "at most 32 levels"),
        (b'{"spec": {"hyperparameters": {"seed": ' + b"9" * 5000 + b"}}}", "at most 100"),
        (b'{"spec": {"validation_fraction": NaN}}', "finite"),
        (b'{"spec": {"model": "a", "model": "b"}}', "twice"),
        (b"[1, 2]", "JSON object"),
        (b'{"spec": [1]}', ""),
        (b'{"spec": null, "request_id": {}}', ""),
    ):
        err = invalid(route("POST", "/v1/jobs"), {}, [], raw)
        assert err.violations[0].field and words in err.violations[0].description, raw[:40]
    err = invalid(route("POST", "/v1/jobs"), {}, [], b"{not json")
    assert err.violations[0].field == "body"
    err = invalid(route("POST", "/v1/jobs"), {}, [], b"\xff\xfe")
    assert "UTF-8" in err.violations[0].description
    err = invalid(route("POST", "/v1/jobs"), {}, [("request_id", "x")], b"{}")
    assert "JSON body" in err.violations[0].description


def test_sequence_and_resume_fields_are_found_by_name():
    assert field_path_named(
        training_service_pb.WatchTrainingJobResponse.DESCRIPTOR, "sequence"
    ) == (
        "event",
        "sequence",
    )
    assert field_path_named(
        training_service_pb.WatchTrainingJobRequest.DESCRIPTOR, "after_sequence", depth=1
    ) == ("after_sequence",)
    assert (
        field_path_named(
            training_service_pb.GetTrainingJobRequest.DESCRIPTOR, "after_sequence", depth=1
        )
        is None
    )
