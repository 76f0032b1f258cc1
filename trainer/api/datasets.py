"""The thin gRPC servicer of `DatasetService`: proto in, DatasetManager call, proto out.

Bad records are not RPC errors: they come back as a report with `valid: false`.
RPC errors are for bad requests, paths outside the data roots and limits.
"""

from __future__ import annotations

from tunewire.errors import FieldViolation, handles_errors, invalid_argument
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.datasets.manager import DatasetManager
from tunewire.trainer.datasets.options import validation_options
from tunewire.trainer.identity import identify
from tunewire.trainer.paths import confine
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import dataset_service_pb2_grpc as dataset_service_grpc


class DatasetService(dataset_service_grpc.DatasetServiceServicer):
    def __init__(self, config: TrainerConfig, datasets: DatasetManager):
        self._config = config
        self._datasets = datasets

    def _who(self, context):
        return identify(context, self._config.internal_token)

    @handles_errors
    async def UploadDataset(self, request_iterator, context):
        dataset = await self._datasets.upload(self._who(context), request_iterator)
        return dataset_service_pb.UploadDatasetResponse(dataset=dataset)

    @handles_errors
    async def ValidateDataset(self, request, context):
        who = self._who(context)
        options = validation_options(request.options, self._config.allowed_model_roots)
        source = request.WhichOneof("source")
        if source == "dataset_id":
            report = await self._datasets.validate_stored(who, request.dataset_id, options)
        elif source == "content":
            report = await self._datasets.validate_content(request.content, options)
        elif source == "path":
            path = confine(request.path, self._config.allowed_roots, "path")
            report = await self._datasets.validate_path(path, options)
        else:
            raise invalid_argument(
                [FieldViolation("source", "give one of dataset_id, content or path")]
            )
        return dataset_service_pb.ValidateDatasetResponse(report=report)

    @handles_errors
    async def NormalizeDataset(self, request, context):
        dataset, split = await self._datasets.normalize(
            self._who(context), request.dataset_id, request.validation_fraction, request.seed
        )
        statistics = dataset_pb.DatasetStatistics()
        statistics.CopyFrom(dataset.report.statistics)
        statistics.train_records = split.train_records
        statistics.validation_records = split.validation_records
        return dataset_service_pb.NormalizeDatasetResponse(
            dataset=dataset,
            train_path=str(split.train_path),
            validation_path=str(split.validation_path) if split.validation_path else "",
            statistics=statistics,
        )

    @handles_errors
    async def GetDataset(self, request, context):
        dataset = self._datasets.visible(self._who(context), request.dataset_id)
        return dataset_service_pb.GetDatasetResponse(dataset=dataset)

    @handles_errors
    async def ListDatasets(self, request, context):
        datasets, token = self._datasets.list(
            self._who(context), request.page_size, request.page_token
        )
        return dataset_service_pb.ListDatasetsResponse(datasets=datasets, next_page_token=token)
