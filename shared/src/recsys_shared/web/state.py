"""A service's lifespan state as one typed object, instead of names looked up on ``request.state``.

Each service builds one frozen dataclass in its lifespan (its clients, its background workers,
its settings) and yields it with :func:`lifespan_state_of`; :func:`state_lifespan` is that
lifespan, given the function that builds the state on an exit stack. Starlette copies what
the lifespan yields into every request's scope; :func:`lifespan_state` takes the object back
out, checked against the class the caller expects, so a route reads ``state.registry`` with
its type known.

Routes with FastAPI dependencies take it as ``Annotated[GatewayState, Depends(state_dependency(
GatewayState))]`` (a service's ``deps.py`` names that alias once); the fast lane's endpoints,
which take no dependencies, call :func:`lifespan_state` themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from starlette.requests import HTTPConnection, Request

#: The one key of the lifespan state a service yields.
STATE_KEY = "service_state"

T = TypeVar("T")


def lifespan_state_of(state: object) -> dict[str, Any]:
    """What a lifespan yields for ``state`` to reach every request."""
    return {STATE_KEY: state}


def state_lifespan(
    build: Callable[[AsyncExitStack], Awaitable[object]],
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A service's lifespan: ``build`` creates the state, registering on the stack how to stop
    and close each part; the state reaches every request, and at shutdown (or when ``build``
    fails half-way) the stack closes what was registered, in reverse order."""

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            yield lifespan_state_of(await build(stack))

    return lifespan


def lifespan_state(connection: HTTPConnection, kind: type[T]) -> T:
    """The service's state of class ``kind``, as its lifespan yielded it."""
    return stored_state(connection.scope.get("state"), kind)


def stored_state(state: Mapping[str, Any] | None, kind: type[T]) -> T:
    """``kind`` out of a lifespan state mapping (a request scope's, or ``TestClient.app_state``)."""
    found = (state or {}).get(STATE_KEY)
    if found is None:
        raise RuntimeError(
            f"The lifespan state holds no {kind.__name__} under '{STATE_KEY}': the app's "
            "lifespan has not run, or did not yield lifespan_state_of(...)."
        )
    if not isinstance(found, kind):
        raise TypeError(
            f"The lifespan state under '{STATE_KEY}' is a {type(found).__name__}, "
            f"not a {kind.__name__}."
        )
    return found


def state_dependency(kind: type[T]) -> Callable[[Request], Coroutine[Any, Any, T]]:
    """A FastAPI dependency answering the service's state of class ``kind``.

    Asynchronous on purpose: FastAPI runs a plain function dependency in a worker thread."""

    async def dependency(request: Request) -> T:
        return lifespan_state(request, kind)

    return dependency
