"""Who is calling the trainer.

The trainer does not authenticate end users; the gateway does, and passes the
caller's identity in metadata (tunewire.identity). The trainer believes that
metadata only from callers it can trust: by default it listens where only this
host can reach it (loopback or a unix socket); any other bind requires the
shared internal token, which the gateway then presents on every call.
"""

from __future__ import annotations

import hmac

import grpc

from tunewire.errors import Reason, ServiceError
from tunewire.identity import (
    INTERNAL_TOKEN_HEADER,
    Principal,
    metadata_dict,
    principal_from_metadata,
)


def identify(context: grpc.aio.ServicerContext, internal_token: str) -> Principal:
    metadata = metadata_dict(context.invocation_metadata())
    if internal_token:
        presented = metadata.get(INTERNAL_TOKEN_HEADER, "")
        if not hmac.compare_digest(presented.encode(), internal_token.encode()):
            raise ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this trainer accepts calls only from the gateway (internal token missing or wrong)",
                reason=Reason.INTERNAL_TOKEN_REQUIRED,
            )
    return principal_from_metadata(metadata)
