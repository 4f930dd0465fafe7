"""The typed lifespan state: yielded under one key, read back checked against its class."""

from __future__ import annotations

import inspect
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from recsys_shared.web.state import (
    STATE_KEY,
    lifespan_state,
    lifespan_state_of,
    state_dependency,
    state_lifespan,
    stored_state,
)


@dataclass(frozen=True)
class ServiceState:
    name: str


@dataclass(frozen=True)
class OtherState:
    name: str


def _request(state: dict[str, object] | None) -> Request:
    scope: dict[str, object] = {"type": "http", "method": "GET", "path": "/", "headers": []}
    if state is not None:
        scope["state"] = state
    return Request(scope)


def test_the_state_yielded_is_the_one_read_back() -> None:
    state = ServiceState("a")

    assert lifespan_state(_request(lifespan_state_of(state)), ServiceState) is state
    assert stored_state({STATE_KEY: state}, ServiceState) is state


@pytest.mark.parametrize("state", [None, {}, {"redis": object()}])
def test_a_missing_state_names_the_class_and_the_key(state: dict[str, object] | None) -> None:
    with pytest.raises(RuntimeError, match=f"no ServiceState under '{STATE_KEY}'"):
        lifespan_state(_request(state), ServiceState)


def test_a_state_of_another_class_is_refused() -> None:
    with pytest.raises(TypeError, match="is a OtherState, not a ServiceState"):
        lifespan_state(_request(lifespan_state_of(OtherState("b"))), ServiceState)


async def test_the_dependency_hands_routes_the_lifespan_state() -> None:
    state = ServiceState("served")
    dependency = state_dependency(ServiceState)

    # Asynchronous: FastAPI would run a plain function dependency in a worker thread.
    assert inspect.iscoroutinefunction(dependency)
    assert await dependency(_request(lifespan_state_of(state))) is state


def test_the_state_built_reaches_every_request_and_its_parts_close_in_reverse() -> None:
    closed: list[str] = []

    async def build(stack: AsyncExitStack) -> ServiceState:
        stack.callback(closed.append, "client")
        stack.callback(closed.append, "worker")
        return ServiceState("built")

    app = FastAPI(lifespan=state_lifespan(build))

    @app.get("/name")
    async def name(request: Request) -> str:
        return lifespan_state(request, ServiceState).name

    with TestClient(app) as client:
        assert client.get("/name").json() == "built"
        assert closed == []
    assert closed == ["worker", "client"]


async def test_a_start_up_that_fails_half_way_closes_what_it_had_opened() -> None:
    closed: list[str] = []

    async def build(stack: AsyncExitStack) -> ServiceState:
        stack.callback(closed.append, "client")
        raise ConnectionError("Redis did not answer")

    with pytest.raises(ConnectionError):
        async with state_lifespan(build)(None):
            pass
    assert closed == ["client"]
