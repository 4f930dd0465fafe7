"""The fast lane: hot routes served past FastAPI's router (see this package's README)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send


class FastLane:
    """Serves a few hot routes straight from their endpoints, past FastAPI's router.

    FastAPI 0.165 spends about 85 µs on each request between the middleware and the endpoint
    (an included router's routes are matched twice, every request gets an exit stack and its
    own exception wrapper): a third of a cached recommendation at the gateway. The hot routes
    are still declared as FastAPI routes (so they are documented, and HEAD or any other method
    still goes through FastAPI); each has one method, GET or POST, and its endpoint takes only
    the ``Request``. For a request matching one of them, this calls the endpoint itself and
    maps an exception with the app's own exception handlers, so the answer is the one FastAPI
    would have given.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        exception_handlers: Mapping[Any, Callable[..., Any]],
    ) -> None:
        self.app = app
        self.routes: dict[str, list[APIRoute]] = {}
        for route in routes:
            method, api_route = _api_route(route)
            self.routes.setdefault(method, []).append(api_route)
        # As Starlette splits them: a handler for Exception (or 500) answers in its outermost
        # ServerErrorMiddleware, after the exception has passed every middleware; the others
        # answer where the exception was raised.
        self.exception_handlers = {
            kind: handler
            for kind, handler in exception_handlers.items()
            if kind not in (500, Exception)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            routes = self.routes.get(scope["method"], ())
            path = _route_path(scope) if routes else ""
            for route in routes:
                matched = route.path_regex.match(path)
                if matched is not None:
                    await self._serve(route, matched.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        route: APIRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["route"] = route  # for the metrics' route label, as the router would set it
        scope["path_params"] = {
            name: route.param_convertors[name].convert(value) for name, value in params.items()
        }
        request = Request(scope, receive)
        try:
            response: Response = await route.endpoint(request)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            handled = handler(request, error)
            response = cast(Response, await handled if inspect.isawaitable(handled) else handled)
        await response(scope, receive, send)

    def _handler_for(self, error: Exception) -> Callable[..., Any] | None:
        for kind in type(error).__mro__:  # the nearest registered class, as Starlette picks
            if kind in self.exception_handlers:
                return self.exception_handlers[kind]
        return None


def _api_route(route: BaseRoute) -> tuple[str, APIRoute]:
    if not isinstance(route, APIRoute) or route.methods not in ({"GET"}, {"POST"}):
        raise TypeError(f"Only GET or POST routes can take the fast lane, not {route!r}.")
    if route.dependant.dependencies or route.dependencies:
        # The lane calls the endpoint with the Request alone: a dependency (an auth check)
        # would silently not run. Refused at start-up, by name.
        raise TypeError(
            f"Route {route.path} has dependencies; the fast lane would skip them. Call them "
            "from the endpoint, or leave the route to FastAPI."
        )
    taken = route.dependant
    if taken.path_params or taken.query_params or taken.body_params or taken.header_params:
        raise TypeError(
            f"Route {route.path} declares parameters for FastAPI to parse; on the fast lane an "
            "endpoint takes only the Request (parse with recsys_shared.fastpath.parameters)."
        )
    (method,) = route.methods
    return method, route


def _route_path(scope: Scope) -> str:
    """The path the routes are matched against: without the ``root_path`` it is served under."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        return path[len(root_path) :]
    return path
