"""Route handlers of the OpenAI sub-application.

The parent app's auth middleware would refuse a call in tunewire's error shape;
these routes are authenticated by the sub-application's own middleware, with
the same Authenticator, so that a refusal comes in OpenAI's shape.
"""

from __future__ import annotations


def authenticated_here(handler):
    async def route(request):
        return await handler(request)

    route.tunewire_authenticated_elsewhere = True  # the parent's middleware leaves it to us
    route.__name__ = getattr(handler, "__name__", "route")
    return route
