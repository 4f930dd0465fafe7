"""Limits on a request: its running time and the size of its body, answered as problems."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys_shared.errors import (
    PayloadTooLarge,
    RecsysError,
    RequestTimeout,
    Unavailable,
)
from recsys_shared.web.problems import problem_response


class RequestTimeoutMiddleware:
    """Ends a request that runs longer than ``seconds`` with a 503 problem (if nothing was sent
    yet), so a stuck dependency cannot hold connections and workers forever; or with a 408 and
    ``Connection: close`` when it was still waiting for the client's body (the client's delay,
    which a retry would not mend).

    One watchdog per process rather than one ``asyncio.timeout`` per request (which costs a
    timer in the event loop's heap, armed and cancelled every time: 8 µs of a request that
    takes 130): requests are kept in the order they started, so their deadlines are in order
    too, and the watchdog, which ticks only while requests run, cancels the overdue ones at
    the front. A request ends within a tick (a quarter of ``seconds``, at most 1 s) of its
    deadline.
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.tick_seconds = min(seconds / 4, 1.0)
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # in start order
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task() if scope["type"] == "http" else None
        if task is None:
            await self.app(scope, receive, send)
            return
        started = receiving = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def tracking_receive() -> Message:
            nonlocal receiving
            receiving = True
            message = await receive()
            receiving = False  # not when cancelled while waiting: that is what it tells
            return message

        loop = asyncio.get_running_loop()
        cancelling = task.cancelling()
        self._deadlines[task] = loop.time() + self.seconds
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.tick_seconds, self._cancel_overdue)
        try:
            await self.app(scope, tracking_receive, tracking_send)
        except asyncio.CancelledError:
            # Ours only if the watchdog cancelled it and nobody else did too (the test
            # asyncio.timeout makes).
            if task not in self._expired or task.uncancel() > cancelling:
                raise
            if started:
                raise TimeoutError(f"Request ran past {self.seconds:g} s mid-answer.") from None
            if receiving:
                late = f"The request's body did not arrive in {self.seconds:g} s."
                stalled = RequestTimeout(late)
                await _send_problem(scope, send, stalled, headers={"Connection": "close"})
                return
            await _send_problem(
                scope,
                send,
                Unavailable(f"The request took longer than {self.seconds:g} s.", retry_after=1),
            )
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    def _cancel_overdue(self) -> None:
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in self._deadlines.items():
            if deadline > now:
                break  # every later request started later
            if task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._deadlines:
            self._watchdog = loop.call_later(self.tick_seconds, self._cancel_overdue)


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, whether or not Content-Length is set."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_problem(scope, send, self._too_large())
            return
        if declared == 0 or (declared is None and not _may_stream_a_body(scope)):
            await self.app(scope, receive, send)  # no body (most GETs): nothing to count
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, because FastAPI turns any other error raised while it
                    # reads the body into a 400; ours maps to a 413 problem below.
                    raise StarletteHTTPException(413, self._too_large().detail)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is larger than the limit of {self.max_bytes} bytes."
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _may_stream_a_body(scope: Scope) -> bool:
    """HTTP/1.x has a body only with Content-Length or Transfer-Encoding; HTTP/2 and 3 may
    stream one without either."""
    if scope.get("http_version", "1.1") not in {"1.0", "1.1"}:
        return True
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


async def _send_problem(
    scope: Scope, send: Send, error: RecsysError, *, headers: dict[str, str] | None = None
) -> None:
    response = problem_response(error)
    response.headers.update(headers or {})
    await response(scope, _noop_receive, send)


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}
