"""Request options become the library's options in one place, with the proto's limits."""

import grpc
import pytest

from tunewire.datasets.api import ValidationOptions
from tunewire.errors import ServiceError
from tunewire.trainer.datasets.options import validation_options
from tunewire.trainer.paths import Roots
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

pytestmark = pytest.mark.timeout(60)


def fields(exc: ServiceError) -> dict[str, str]:
    return {v.field: v.description for v in exc.violations}


def test_request_options_take_defaults_and_their_limits(tiny_model_dir):
    roots = Roots((tiny_model_dir.parent,), kind="model")
    assert validation_options(None, roots) == ValidationOptions()
    assert (
        validation_options(dataset_service_pb.ValidationOptions(), roots) == ValidationOptions()
    )  # unset: the library's
    options = validation_options(
        dataset_service_pb.ValidationOptions(max_issues=5, preview_records=10), roots
    )
    assert (options.max_issues, options.preview_records) == (5, 10)
    with_tokens = validation_options(
        dataset_service_pb.ValidationOptions(tokenizer=str(tiny_model_dir), max_tokens=9), roots
    )
    assert with_tokens.tokenizer == str(tiny_model_dir.resolve()) and with_tokens.max_tokens == 9

    with pytest.raises(ServiceError) as err:
        validation_options(
            dataset_service_pb.ValidationOptions(
                max_issues=20000, preview_records=-1, max_tokens=100
            ),
            roots,
            "metadata.options",
        )
    assert fields(err.value) == {
        "metadata.options.max_issues": "must be between 0 and 10,000, got 20000",
        "metadata.options.preview_records": "must be between 0 and 100, got -1",
        "metadata.options.max_tokens": "needs metadata.options.tokenizer to count tokens",
    }
    with pytest.raises(ServiceError) as err:
        validation_options(
            dataset_service_pb.ValidationOptions(tokenizer=str(tiny_model_dir.parent / "nope")),
            roots,
        )
    assert list(fields(err.value)) == ["options.tokenizer"]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # Outside the model roots: refused before anything is looked at.
    with pytest.raises(ServiceError) as err:
        validation_options(dataset_service_pb.ValidationOptions(tokenizer="/no/model"), roots)
    assert list(fields(err.value)) == ["options.tokenizer"]
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
