"""Work that runs beside the requests: writes the answer does not wait for (cache entries,
served-list records), and the loops a service keeps running from start-up to shutdown
(watchers, syncs, guards).

asyncio holds only weak references to tasks, so a task nobody keeps may be collected before it
runs: :func:`fire_and_forget` keeps its own until they are done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

_RUNNING: set[asyncio.Task[Any]] = set()

E = TypeVar("E", bound=Exception)


def fire_and_forget(
    coroutine: Coroutine[Any, Any, Any], on_error: Callable[[BaseException], None]
) -> None:
    """Run ``coroutine`` in the background; ``on_error`` hears of its failure."""
    task = asyncio.ensure_future(coroutine)
    _RUNNING.add(task)
    task.add_done_callback(lambda done: _finished(done, on_error))


def _finished(task: asyncio.Task[Any], on_error: Callable[[BaseException], None]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        on_error(error)


async def repeat(
    job: Callable[[], Awaitable[object]],
    *,
    pause: float | Callable[[], Awaitable[object]],
    survives: tuple[type[E], ...],
    on_error: Callable[[E], None] | None = None,
) -> NoReturn:
    """Run ``job`` until cancelled, waiting ``pause`` seconds (or for ``pause()``) after each
    run. A failure of a ``survives`` kind (Redis away, a peer down) goes to ``on_error`` (or
    is let be) and is tried again next time; any other ends the loop, as a bug should."""
    while True:
        try:
            await job()
        except survives as error:
            if on_error is not None:
                on_error(error)
        if callable(pause):
            await pause()
        else:
            await asyncio.sleep(pause)


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the loops started with a service (``None``: one never started), and wait until
    they have stopped."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
