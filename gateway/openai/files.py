"""`/files`: a file with purpose `fine-tune` is a tunewire dataset.

POST   /files               multipart (`file`, `purpose`) → UploadDataset, streamed in chunks;
                            validated on arrival: a file with bad records is a 400 that
                            names the first lines, fields and reasons
GET    /files               ListDatasets (?purpose=&order=&after=&limit=)
GET    /files/{id}          GetDataset, or a job's metrics file (`file-result-…`)
GET    /files/{id}/content  a job's metrics file (base64 CSV, as OpenAI serves it)
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, web

from tunewire import enum_words
from tunewire.gateway.auth import PRINCIPAL
from tunewire.gateway.keys import Principal
from tunewire.gateway.limits import upload_too_large
from tunewire.gateway.openai import body as fields
from tunewire.gateway.openai import names
from tunewire.gateway.openai.calls import DATASETS, TrainerCalls
from tunewire.gateway.openai.errors import bad_request, not_found_error
from tunewire.gateway.openai.pages import cursor_page, page_body
from tunewire.gateway.openai.results import results_csv
from tunewire.gateway.openai.routing import authenticated_here
from tunewire.reasons import Reason
from tunewire.v1 import dataset_pb2 as dataset_pb
from tunewire.v1 import dataset_service_pb2 as dataset_service_pb
from tunewire.v1 import training_job_pb2 as training_job_pb
from tunewire.v1 import training_service_pb2 as training_service_pb

PURPOSE = "fine-tune"
RESULTS_PURPOSE = "fine-tune-results"
LIST_PAGE = 1000
ISSUES_IN_MESSAGE = 5


def file_object(dataset: dataset_pb.Dataset) -> dict:
    return {
        "id": dataset.id,
        "object": "file",
        "bytes": dataset.size_bytes,
        "created_at": dataset.create_time.seconds,
        "filename": dataset.display_name,
        "purpose": PURPOSE,
        "status": "processed" if dataset.report.valid else "error",
        "status_details": None,
        "expires_at": None,
        "tunewire": {
            "format": enum_words.display_word(dataset_pb.DatasetFormat, dataset.format),
            "records": dataset.report.valid_samples,
            "warnings": dataset.report.warning_count,
            "sha256": dataset.sha256,
        },
    }


def result_file_object(job: training_job_pb.TrainingJob, size: int) -> dict:
    return {
        "id": names.result_file_id(job.id),
        "object": "file",
        "bytes": size,
        "created_at": (job.end_time.seconds or job.create_time.seconds),
        "filename": "step_metrics.csv",
        "purpose": RESULTS_PURPOSE,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def _issue_line(issue: dataset_pb.DatasetIssue) -> str:
    where = f"line {issue.line}" + (f", field {issue.field}" if issue.field else "")
    return f"{where}: {issue.code}: {issue.message}"


def invalid_file_error(report: dataset_pb.ValidationReport, filename: str):
    shown = "; ".join(_issue_line(i) for i in report.errors[:ISSUES_IN_MESSAGE])
    more = report.error_count - min(len(report.errors), ISSUES_IN_MESSAGE)
    tail = f" (and {more} more error(s))" if more > 0 else ""
    error = bad_request(
        f"Invalid file {filename!r} for fine-tuning: {shown}{tail}",
        "file",
        reason=Reason.DATASET_INVALID,
    )
    return error


async def _next_part(reader):
    """The next part, or a 400 naming `file` for a body that is not multipart after all
    (no boundary, no starting boundary, cut short): aiohttp's ValueError was a 500."""
    try:
        return await reader.next()
    except ValueError as exc:
        raise bad_request(f"the multipart body cannot be read: {exc}", "file") from None


def _display_name(given: str | None) -> str:
    """The upload's file name as stored (never a path: only its display name), at most
    256 characters; a name aiohttp decoded to lone surrogates (bytes that are not
    UTF-8) cannot be stored and is refused."""
    name = (given or "upload.jsonl")[:256]
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("the file's name is not UTF-8", "file") from None
    return name


class FileRoutes:
    def __init__(self, calls: TrainerCalls, max_upload_bytes: int, chunk_bytes: int):
        self._calls = calls
        self._max_upload = max_upload_bytes
        self._chunk = chunk_bytes

    async def _chunks(self, part: BodyPartReader, filename: str) -> AsyncIterator:
        yield dataset_service_pb.UploadDatasetRequest(
            metadata=dataset_service_pb.UploadMetadata(display_name=filename)
        )
        total = 0
        while chunk := await part.read_chunk(self._chunk):
            total += len(chunk)
            if total > self._max_upload:
                raise upload_too_large(self._max_upload)
            yield dataset_service_pb.UploadDatasetRequest(chunk=chunk)

    async def create(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        if not request.content_type.startswith("multipart/"):
            raise bad_request(
                "upload a file as multipart/form-data with fields 'file' and 'purpose'", "file"
            )
        size = request.content_length
        if size is not None and size > self._max_upload + (1 << 20):
            raise upload_too_large(self._max_upload)
        try:
            reader = await request.multipart()
        except ValueError as exc:  # no boundary in the Content-Type
            raise bad_request(f"the multipart body cannot be read: {exc}", "file") from None
        purpose, dataset, filename = None, None, ""
        while (part := await _next_part(reader)) is not None:
            if part.name == "purpose":
                purpose = (await part.text()).strip()
                if purpose != PURPOSE:
                    raise bad_request(
                        f"purpose must be {PURPOSE!r} on this server, got {purpose[:40]!r}",
                        "purpose",
                    )
            elif part.name == "file":
                if dataset is not None:
                    raise bad_request("send one file per upload", "file")
                filename = _display_name(part.filename)
                reply = await self._calls.upload(
                    DATASETS, "UploadDataset", self._chunks(part, filename), who
                )
                dataset = reply.dataset
            elif part.name and part.name.startswith("expires_after"):
                raise bad_request(
                    "expires_after is not supported: files are kept until deleted", part.name
                )
            else:
                raise bad_request(f"Unrecognized request argument supplied: {part.name}", part.name)
        if dataset is None:
            raise bad_request("Missing required parameter: 'file'.", "file")
        if purpose is None:
            raise bad_request("Missing required parameter: 'purpose'.", "purpose")
        if not dataset.report.valid:
            raise invalid_file_error(dataset.report, filename)
        return web.json_response(file_object(dataset))

    async def _all(self, who: Principal) -> AsyncIterator[dataset_pb.Dataset]:
        token = ""
        while True:
            page = await self._calls.datasets(
                "ListDatasets",
                dataset_service_pb.ListDatasetsRequest(page_size=LIST_PAGE, page_token=token),
                who,
            )
            for dataset in page.datasets:
                if dataset.report.valid:
                    yield dataset
            token = page.next_page_token
            if not token:
                return

    async def list(self, request: web.Request) -> web.Response:
        who = request[PRINCIPAL]
        limit = fields.query_limit(request, default=10_000, high=10_000)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request(f"order must be 'asc' or 'desc', got {order[:20]!r}", "order")
        purpose = request.query.get("purpose", "")
        if purpose and purpose != PURPOSE:
            return web.json_response(page_body([], False))
        items = self._all(who)
        if order == "asc":
            everything = [d async for d in items]

            async def oldest_first():
                for d in reversed(everything):
                    yield d

            items = oldest_first()
        datasets, more = await cursor_page(
            items, lambda d: d.id, request.query.get("after", ""), limit
        )
        return web.json_response(page_body([file_object(d) for d in datasets], more))

    async def _dataset(self, who: Principal, file_id: str) -> dataset_pb.Dataset:
        reply = await self._calls.datasets(
            "GetDataset", dataset_service_pb.GetDatasetRequest(dataset_id=file_id), who
        )
        if not reply.dataset.report.valid:
            raise not_found_error("file", file_id, "file_id")
        return reply.dataset

    async def _results(
        self, who: Principal, file_id: str
    ) -> tuple[training_job_pb.TrainingJob, bytes]:
        job_id = names.job_of_result_file(file_id)
        job = (
            await self._calls.training(
                "GetTrainingJob", training_service_pb.GetTrainingJobRequest(job_id=job_id), who
            )
        ).job
        if job.state != training_job_pb.JOB_STATE_SUCCEEDED:
            raise not_found_error("file", file_id, "file_id")
        return job, base64.b64encode(await results_csv(self._calls, who, job))

    async def retrieve(self, request: web.Request) -> web.Response:
        who, file_id = request[PRINCIPAL], request.match_info["file_id"]
        if names.job_of_result_file(file_id):
            job, content = await self._results(who, file_id)
            return web.json_response(result_file_object(job, len(content)))
        return web.json_response(file_object(await self._dataset(who, file_id)))

    async def content(self, request: web.Request) -> web.Response:
        who, file_id = request[PRINCIPAL], request.match_info["file_id"]
        if names.job_of_result_file(file_id):
            _, content = await self._results(who, file_id)
            return web.Response(body=content, content_type="text/csv")
        raise not_found_error("file", file_id, "file_id")

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/files", authenticated_here(self.create))
        router.add_get("/files", authenticated_here(self.list))
        router.add_get("/files/{file_id}", authenticated_here(self.retrieve))
        router.add_get("/files/{file_id}/content", authenticated_here(self.content))
