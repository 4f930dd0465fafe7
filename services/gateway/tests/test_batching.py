"""Dynamic batching of users' lists: what one event-loop turn asks for goes in one call, and a
failed call, an old replica or a request that gave up are each handled per request."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.batching import UserListBatcher
from gateway.clients import RecommenderClient
from gateway.replicas import Replicas
from recsys_shared.errors import UpstreamUnavailable
from recsys_shared.schemas import RecommendationQuery, Recommendations, Strategy

URLS = ["http://recommender-a", "http://recommender-b"]


def _per_user(request: httpx.Request) -> httpx.Response:
    """A recommender that answers each user with one item named after the user and the page."""
    user = urlsplit(str(request.url)).path.split("/")[2]
    offset = parse_qs(request.url.query.decode())["offset"][0]
    answer = Recommendations(
        user_id=user,
        items=[{"item_id": f"{user}-{offset}", "score": 1.0}],  # type: ignore[list-item]
        model_version=1,
        strategy=Strategy.PERSONALIZED,
        recommendation_id=f"r-{user}-{offset}",
    )
    return httpx.Response(200, content=answer.model_dump_json())


def _batcher(upstream: Any, handler: Any = _per_user, *, max_lists: int = 64) -> UserListBatcher:
    upstream.service.handler = handler
    client = RecommenderClient(upstream, Replicas(URLS, failures=3, reset_seconds=5.0))
    return UserListBatcher(client, max_lists=max_lists)


async def test_the_lists_asked_for_in_one_turn_go_in_one_call(upstream: Any) -> None:
    batcher = _batcher(upstream)

    answers = await asyncio.gather(
        *(batcher.get(f"u{n}", RecommendationQuery(offset=n)) for n in range(5))
    )

    assert [answer.recommendations.items[0].item_id for answer in answers] == [
        f"u{n}-{n}" for n in range(5)
    ]
    assert len(upstream.batches) == 1
    assert [asked["user_id"] for asked in upstream.batches[0]["requests"]] == [
        f"u{n}" for n in range(5)
    ]
    # Each answer is forwarded as the bytes of its own line.
    assert Recommendations.model_validate_json(answers[3].body) == answers[3].recommendations


async def test_the_query_travels_with_each_list(upstream: Any) -> None:
    batcher = _batcher(upstream)

    await batcher.get('a"b', RecommendationQuery(k=7, offset=2, exclude_seen=False, category="x"))

    assert upstream.batches == [
        {
            "requests": [
                {"user_id": 'a"b', "k": 7, "offset": 2, "exclude_seen": False, "category": "x"}
            ]
        }
    ]


async def test_lists_asked_in_different_turns_go_separately(upstream: Any) -> None:
    batcher = _batcher(upstream)

    for n in range(3):
        await batcher.get(f"u{n}", RecommendationQuery())

    assert [len(batch["requests"]) for batch in upstream.batches] == [1, 1, 1]


async def test_a_turn_with_more_lists_than_a_batch_holds_is_split(upstream: Any) -> None:
    batcher = _batcher(upstream, max_lists=4)

    answers = await asyncio.gather(
        *(batcher.get(f"u{n}", RecommendationQuery(offset=n)) for n in range(10))
    )

    assert [len(batch["requests"]) for batch in upstream.batches] == [4, 4, 2]
    assert [answer.recommendations.user_id for answer in answers] == [f"u{n}" for n in range(10)]


async def test_a_failed_batch_fails_each_request_on_its_own(upstream: Any) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    batcher = _batcher(upstream, refused)

    outcomes = await asyncio.gather(
        *(batcher.get(f"u{n}", RecommendationQuery()) for n in range(3)), return_exceptions=True
    )

    assert all(isinstance(outcome, UpstreamUnavailable) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 3  # one exception object each


async def test_a_batch_with_the_wrong_number_of_lists_is_tried_on_the_next_replica(
    upstream: Any,
) -> None:
    batcher = _batcher(upstream)
    service = upstream.service
    answered = upstream.post

    async def short_on_a(origin, target, body, **kwargs):  # type: ignore[no-untyped-def]
        response = await answered(origin, target, body, **kwargs)
        if origin.host == "recommender-a":
            return type(response)(200, response.body.split(b"\n")[0])
        return response

    upstream.post = short_on_a  # type: ignore[method-assign]

    answers = await asyncio.gather(*(batcher.get(f"u{n}", RecommendationQuery()) for n in range(2)))

    assert [answer.recommendations.user_id for answer in answers] == ["u0", "u1"]
    assert [request.url.host for request in service.requests] == [
        "recommender-a",
        "recommender-a",
        "recommender-b",
        "recommender-b",
    ]


async def test_a_replica_without_the_batch_route_is_asked_one_list_at_a_time(upstream: Any) -> None:
    batcher = _batcher(upstream)
    service = upstream.service
    upstream.batch_route = False  # an older recommender, during a rolling update

    answers = await asyncio.gather(
        *(batcher.get(f"u{n}", RecommendationQuery(offset=n)) for n in range(3))
    )

    assert [answer.recommendations.items[0].item_id for answer in answers] == [
        "u0-0",
        "u1-1",
        "u2-2",
    ]
    assert upstream.batches == []
    assert [request.method for request in service.requests] == ["GET"] * 3
    assert "x-batch-size" not in service.requests[0].headers


async def test_a_request_that_gave_up_before_its_turn_ended_is_not_sent(upstream: Any) -> None:
    batcher = _batcher(upstream)

    kept = asyncio.ensure_future(batcher.get("kept", RecommendationQuery()))
    dropped = asyncio.ensure_future(batcher.get("dropped", RecommendationQuery()))
    await asyncio.sleep(0)  # both are waiting; the flush is due at the end of this turn
    dropped.cancel()

    assert (await kept).recommendations.user_id == "kept"
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert [asked["user_id"] for asked in upstream.batches[0]["requests"]] == ["kept"]
