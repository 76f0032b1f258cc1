"""Page sizes and page tokens of every List RPC, in one place.

A token is opaque to clients (AIP-158): base64url of a version byte, a digest
of the query it came from and the offset of the next page. A token given
back with a different query (another filter, another caller) is refused as
INVALID_ARGUMENT naming `page_token`, instead of silently paging through a
different list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from tunewire.errors import FieldViolation, invalid_argument

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

_VERSION = 1
_LAYOUT = struct.Struct(">B8sQ")  # version, query digest, offset


@dataclass(frozen=True)
class Page:
    """Which rows a List call asks for: `limit` rows from `offset`."""

    offset: int
    limit: int
    _query: bytes

    def next_token(self, more: bool) -> str:
        """The token of the page after this one; "" on the last page."""
        if not more:
            return ""
        return self.token_at(self.offset + self.limit)

    def token_at(self, offset: int) -> str:
        """A token of this query that continues at `offset` (a byte offset, for logs)."""
        data = _LAYOUT.pack(_VERSION, self._query, offset)
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def page(page_size: int, page_token: str, *query: object) -> Page:
    """The page a request asks for. `query`: everything that decides the list's rows
    (the caller, filters, order), so that a token only continues the list it came from."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise invalid_argument(
            [FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {page_size}")]
        )
    digest = hashlib.sha256(repr(query).encode()).digest()[:8]
    offset = _offset(page_token, digest) if page_token else 0
    return Page(offset, page_size or DEFAULT_PAGE_SIZE, digest)


def _offset(token: str, digest: bytes) -> int:
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, query, offset = _LAYOUT.unpack(data)
    except (binascii.Error, ValueError, struct.error):
        version = query = offset = None
    if version != _VERSION:
        raise invalid_argument(
            [FieldViolation("page_token", "is not a token returned by a previous page")]
        )
    if query != digest:
        raise invalid_argument(
            [
                FieldViolation(
                    "page_token",
                    "was returned for a different query (the filter or the caller changed); "
                    "send the same query as the first page, or start again without page_token",
                )
            ]
        )
    return offset
