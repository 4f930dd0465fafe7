"""Writes the answer does not wait for (cache entries, served-list records), started and kept
alive until done: asyncio holds only weak references to tasks, so a task nobody keeps may be
collected before it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

_RUNNING: set[asyncio.Task[Any]] = set()


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
