"""OpenAI's cursor pages: `{"object": "list", "data", "has_more", "first_id", "last_id"}`.

A page starts after the object whose id is `after` (the SDKs' paginators send
the last id of the previous page) and holds at most `limit` objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from tunewire.gateway.openai.errors import bad_request

T = TypeVar("T")


def page_body(data: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def cursor_page(
    items: AsyncIterator[T], id_of: Callable[[T], str], after: str, limit: int, param="after"
) -> tuple[list[T], bool]:
    """(up to `limit` items after the one with id `after`, whether more follow)."""
    taken: list[T] = []
    found = not after
    async with contextlib.aclosing(items):  # stops the pages' calls once this page is full
        async for item in items:
            if not found:
                found = id_of(item) == after
                continue
            if len(taken) == limit:
                return taken, True
            taken.append(item)
    if not found:
        raise bad_request(f"after: no object with id {after!r} in this list", param)
    return taken, False
