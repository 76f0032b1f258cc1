"""Request options become the library's options in one place, with the proto's limits."""

import pytest

from tunewire.datasets.api import ValidationOptions
from tunewire.errors import ServiceError
from tunewire.trainer.datasets.options import validation_options
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb

pytestmark = pytest.mark.timeout(60)


def fields(exc: ServiceError) -> dict[str, str]:
    return {v.field: v.description for v in exc.violations}


def test_request_options_take_defaults_and_their_limits(tiny_model_dir):
    assert validation_options(None) == ValidationOptions()
    assert (
        validation_options(dataset_service_pb.ValidationOptions()) == ValidationOptions()
    )  # unset: the library's
    options = validation_options(
        dataset_service_pb.ValidationOptions(max_issues=5, preview_records=10)
    )
    assert (options.max_issues, options.preview_records) == (5, 10)
    with_tokens = validation_options(
        dataset_service_pb.ValidationOptions(tokenizer=str(tiny_model_dir), max_tokens=9)
    )
    assert with_tokens.tokenizer == str(tiny_model_dir.resolve()) and with_tokens.max_tokens == 9

    with pytest.raises(ServiceError) as err:
        validation_options(
            dataset_service_pb.ValidationOptions(
                max_issues=20000, preview_records=-1, max_tokens=100
            ),
            "metadata.options",
        )
    assert fields(err.value) == {
        "metadata.options.max_issues": "must be between 0 and 10,000, got 20000",
        "metadata.options.preview_records": "must be between 0 and 100, got -1",
        "metadata.options.max_tokens": "needs metadata.options.tokenizer to count tokens",
    }
    with pytest.raises(ServiceError) as err:
        validation_options(dataset_service_pb.ValidationOptions(tokenizer="/no/model"))
    assert list(fields(err.value)) == ["options.tokenizer"]
