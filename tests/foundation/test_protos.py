"""The generated code imports, and every RPC has an HTTP route (google.api.http)."""

import pytest
from google.api import annotations_pb2

from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc
from tunewire.v1 import training_service_pb2 as training_service_pb
from tunewire.v1 import training_service_pb2_grpc as training_service_grpc

pytestmark = pytest.mark.timeout(30)

SERVICES = {
    "TrainingService": (
        training_service_pb,
        {
            "CreateTrainingJob",
            "GetTrainingJob",
            "ListTrainingJobs",
            "CancelTrainingJob",
            "WatchTrainingJob",
            "ListCheckpoints",
            "Generate",
            "GetServerInfo",
        },
    ),
    "DatasetService": (
        dataset_service_pb,
        {
            "UploadDataset",
            "ValidateDataset",
            "NormalizeDataset",
            "GetDataset",
            "ListDatasets",
        },
    ),
}


def http_rules():
    for service_name, (module, _) in SERVICES.items():
        for method in module.DESCRIPTOR.services_by_name[service_name].methods:
            yield method, method.GetOptions().Extensions[annotations_pb2.http]


def test_grpc_stubs_and_servicers_are_generated():
    for module in (training_service_grpc, dataset_service_grpc):
        for service_name in SERVICES:
            if hasattr(module, f"{service_name}Stub"):
                assert hasattr(module, f"{service_name}Servicer")
                assert callable(getattr(module, f"add_{service_name}Servicer_to_server"))
    assert hasattr(training_service_grpc, "TrainingServiceStub")
    assert hasattr(dataset_service_grpc, "DatasetServiceStub")


def test_services_have_the_rpcs_of_the_design():
    for service_name, (module, expected) in SERVICES.items():
        methods = {m.name for m in module.DESCRIPTOR.services_by_name[service_name].methods}
        assert expected <= methods, f"{service_name} lacks {sorted(expected - methods)}"


def test_every_rpc_has_an_http_route_under_v1():
    for method, rule in http_rules():
        verb = rule.WhichOneof("pattern")
        assert verb in ("get", "post", "put", "patch", "delete"), f"{method.full_name}: no route"
        assert getattr(rule, verb).startswith("/v1/"), f"{method.full_name}: {getattr(rule, verb)}"


def test_route_variables_and_bodies_name_request_fields():
    for method, rule in http_rules():
        path = getattr(rule, rule.WhichOneof("pattern"))
        variables = [part.split("}")[0].split("=")[0] for part in path.split("{")[1:]]
        for variable in variables + ([rule.body] if rule.body not in ("", "*") else []):
            message = method.input_type
            for field_name in variable.split("."):
                field = message.fields_by_name.get(field_name)
                assert field is not None, f"{method.full_name}: {path} names unknown {variable!r}"
                message = field.message_type
