"""The catalogue of `google.rpc.ErrorInfo.reason` codes: the one owner of every reason string.

Each member is documented in `protos/tunewire/v1/errors.proto` (enum `ErrorReason`,
whose value names are these strings), so clients in any language know them; a test
keeps the two lists equal. Plain Python with no imports beyond the standard
library, so the mlx worker can raise with these codes too.

Code raises `ServiceError(code, message, Reason.X)` (tunewire.errors) and never a
bare string: a test fails on a reason literal that is not in this catalogue.
"""

from __future__ import annotations

from enum import Enum

# ErrorInfo.domain of every error tunewire sends.
ERROR_DOMAIN = "tunewire.dev"


class Reason(str, Enum):
    """An ErrorInfo.reason. A `str`, so it goes into protos and JSON as its name."""

    __str__ = str.__str__
    __format__ = str.__format__

    # Requests
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    NO_ROUTE = "NO_ROUTE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    UPLOAD_TOO_LARGE = "UPLOAD_TOO_LARGE"
    INTERNAL = "INTERNAL"
    CANCELLED = "CANCELLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    UNIMPLEMENTED = "UNIMPLEMENTED"

    # Who is calling
    API_KEY_REQUIRED = "API_KEY_REQUIRED"
    INVALID_API_KEY = "INVALID_API_KEY"
    CONFLICTING_CREDENTIALS = "CONFLICTING_CREDENTIALS"
    API_KEY_IN_QUERY = "API_KEY_IN_QUERY"
    INTERNAL_TOKEN_REQUIRED = "INTERNAL_TOKEN_REQUIRED"

    # Limits
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    TOO_MANY_WEBHOOKS = "TOO_MANY_WEBHOOKS"

    # Availability
    TRAINER_UNAVAILABLE = "TRAINER_UNAVAILABLE"
    TRAINER_STOPPING = "TRAINER_STOPPING"
    GATEWAY_STOPPING = "GATEWAY_STOPPING"

    # Paths and datasets
    FILE_NOT_FOUND = "FILE_NOT_FOUND"
    PATH_OUTSIDE_DATA_ROOTS = "PATH_OUTSIDE_DATA_ROOTS"
    PATH_OUTSIDE_MODEL_ROOTS = "PATH_OUTSIDE_MODEL_ROOTS"
    DATASET_INVALID = "DATASET_INVALID"

    # Jobs and generation
    JOB_ALREADY_ENDED = "JOB_ALREADY_ENDED"
    JOB_STATE_CONFLICT = "JOB_STATE_CONFLICT"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    NO_ARTIFACTS = "NO_ARTIFACTS"
    GENERATION_TIMEOUT = "GENERATION_TIMEOUT"
    GENERATION_FAILED = "GENERATION_FAILED"

    # Why a job failed (TrainingJob.error)
    INVALID_CONFIG = "INVALID_CONFIG"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    UNKNOWN_TARGET_MODULE = "UNKNOWN_TARGET_MODULE"
    UNSUPPORTED = "UNSUPPORTED"
    DATASET_NOT_FOUND = "DATASET_NOT_FOUND"
    CHECKPOINT_UNUSABLE = "CHECKPOINT_UNUSABLE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    DISTRIBUTED_INIT_FAILED = "DISTRIBUTED_INIT_FAILED"
    DISTRIBUTED_PEER_LOST = "DISTRIBUTED_PEER_LOST"
    WORKER_ERROR = "WORKER_ERROR"
    WORKER_CRASHED = "WORKER_CRASHED"
    WORKER_START_FAILED = "WORKER_START_FAILED"
    PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"
    DIVERGED = "DIVERGED"

    # Browsers (the console, CORS)
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"
    CSRF_CHECK_FAILED = "CSRF_CHECK_FAILED"
    SESSION_EXPIRED = "SESSION_EXPIRED"

    # Downloads
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    ARTIFACT_CHANGED = "ARTIFACT_CHANGED"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"

    # The server's resources
    NO_SPACE = "NO_SPACE"
    DATABASE_CORRUPT = "DATABASE_CORRUPT"
    NO_TRAINER_CAN_RUN = "NO_TRAINER_CAN_RUN"
