"""Which methods a path serves, and HEAD answered wherever GET is.

RFC 9110 (§9.3.2) expects a server that serves GET on a path to serve HEAD there too. Starlette's
routes do; FastAPI's do not, so ``curl -I`` or an uptime monitor sending HEAD (many do by
default) would be told 405 by ``/healthz``. :class:`HeadAsGetMiddleware` sends such a request on
as a GET and passes the answer back without its body: the same status and headers,
``Content-Length`` included, as RFC 9110 allows. HEAD is not added to the OpenAPI document (it
would double every GET operation); what HEAD means is fixed by the HTTP standard.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The methods a 405's ``Allow`` may name.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def served_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """The methods some route serves on this request's path, HEAD wherever GET is: each
    method asked of every route, as the router would (FastAPI's included routers answer
    ``matches`` like routes, but have no ``methods`` of their own to read)."""
    served = {method for method in _METHODS if _serves(routes, scope, method)}
    return served | {"HEAD"} if "GET" in served else served


def _serves(routes: Sequence[BaseRoute], scope: Scope, method: str) -> bool:
    asked = {**scope, "method": method}
    return any(route.matches(asked)[0] is Match.FULL for route in routes)


class HeadAsGetMiddleware:
    """A HEAD on a path that serves GET (and has no HEAD route of its own) is answered as
    that GET would be, without the body. Every other request passes untouched."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        # The app's own route list: routers included after this middleware are in it too.
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and self._as_get(scope):
            as_get = {**scope, "method": "GET"}
            try:
                await self.app(as_get, receive, _headers_only(send))
            finally:
                # The route the router matched, for the metrics and logs outside this layer.
                if "route" in as_get:
                    scope["route"] = as_get["route"]
            return
        await self.app(scope, receive, send)

    def _as_get(self, scope: Scope) -> bool:
        return _serves(self.routes, scope, "GET") and not _serves(self.routes, scope, "HEAD")


def _headers_only(send: Send) -> Send:
    async def send_without_body(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_without_body
