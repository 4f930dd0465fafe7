"""Users' lists asked of the recommenders in batches: dynamic batching without a wait.

The cache misses of one event-loop turn go to a recommender together, in calls of up to
``MAX_BATCH_LISTS`` lists (``POST /batch/recommendations``): one HTTP exchange and one read
of the users' contexts serve them all. Nothing waits for a batch to fill. The first miss of
a turn schedules the send for the end of that turn, so a lone request goes out at once, and under
load the misses that came in together travel together: how many depends on the load, not on
a setting. Batches are sent as soon as they are made, without waiting for earlier ones, so
the connection pool (and behind one Kubernetes Service, every pod) is used as before.

A batch carries the request id and the trace context of its first request: the recommender
logs and traces the call once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass

from gateway import metrics
from gateway.clients import Answer, BatchUnsupported, RecommenderClient, query_string, segment
from recsys_shared.errors import RecsysError, UpstreamUnavailable
from recsys_shared.features import json_string
from recsys_shared.schemas import MAX_BATCH_LISTS, ExperimentArm, RecommendationQuery

log = logging.getLogger(__name__)


def _asked(user_id: str, query: RecommendationQuery, arm: ExperimentArm | None) -> str:
    """One ``UserListRequest`` as JSON, written directly: the fields were validated already."""
    category = json_string(query.category) if query.category is not None else "null"
    pinned = f',"arm":{arm.model_dump_json()}' if arm is not None else ""
    return (
        f'{{"user_id":{json_string(user_id)},"k":{query.k},"offset":{query.offset},'
        f'"exclude_seen":{"true" if query.exclude_seen else "false"},"category":{category}'
        f"{pinned}}}"
    )


@dataclass(frozen=True, slots=True)
class _Waiting:
    user_id: str
    query: RecommendationQuery
    arm: ExperimentArm | None
    future: asyncio.Future[Answer]


class UserListBatcher:
    def __init__(
        self, recommenders: RecommenderClient, *, max_lists: int = MAX_BATCH_LISTS
    ) -> None:
        self.recommenders = recommenders
        self.max_lists = max_lists
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # held, so no batch is collected mid-call

    async def get(
        self, user_id: str, query: RecommendationQuery, arm: ExperimentArm | None = None
    ) -> Answer:
        """The user's list from a recommender, sent with the other lists asked for this turn
        (the variant's, with ``arm``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append(_Waiting(user_id, query, arm, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        # A request cancelled while it waited (its deadline passed) is not sent.
        waiting = [asked for asked in self._waiting if not asked.future.done()]
        self._waiting = []
        for start in range(0, len(waiting), self.max_lists):
            task = asyncio.ensure_future(self._send(waiting[start : start + self.max_lists]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Waiting]) -> None:
        metrics.BATCH_LISTS.observe(len(batch))
        body = '{"requests":[' + ",".join(_asked(a.user_id, a.query, a.arm) for a in batch) + "]}"
        try:
            answers = await self.recommenders.get_batch(body.encode(), len(batch))
        except BatchUnsupported:
            log.info("a recommender has no batch route: asking it one list at a time")
            await asyncio.gather(*(self._one_by_one(asked) for asked in batch))
            return
        except RecsysError as error:
            for asked in batch:
                _fail(asked.future, copy.copy(error))  # one exception object per waiting task
            return
        except BaseException:
            for asked in batch:
                _fail(asked.future, UpstreamUnavailable("The recommender call was interrupted."))
            raise
        for asked, answer in zip(batch, answers, strict=True):
            if not asked.future.done():
                asked.future.set_result(answer)

    async def _one_by_one(self, asked: _Waiting) -> None:
        target = f"/users/{segment(asked.user_id)}/recommendations?{query_string(asked.query)}"
        try:
            answer = await self.recommenders.get(target)
        except RecsysError as error:
            _fail(asked.future, error)
            return
        if not asked.future.done():
            asked.future.set_result(answer)


def _fail(future: asyncio.Future[Answer], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
