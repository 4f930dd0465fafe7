"""Finishing lists: the hand-written JSON is the Recommendations model's JSON on any input;
item details are cached per catalogue version; what is served is recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_shared import keys
from recsys_shared.features import FeatureReader, ItemDetails
from recsys_shared.metrics import REGISTRY
from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient, connect
from recsys_shared.responses import ItemDetailsCache, ResponseBuilder, render
from recsys_shared.schemas import FallbackReason, Recommendations, ScoredItem, ServedList, Strategy
from recsys_shared.testing import eventually

PARTITIONS = keys.Partitions(1)

texts = st.text(max_size=40)
categories = st.lists(st.text(min_size=1, max_size=12), max_size=4)
scores = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
entries = st.tuples(
    st.text(min_size=1, max_size=20), scores, st.none() | st.tuples(texts, categories)
)


def _details(found: tuple[str, list[str]] | None) -> ItemDetails | None:
    if found is None:
        return None
    title, listed = found
    # As the feature-store stores them: sorted, unique, json.dumps.
    return ItemDetails(title, json.dumps(sorted(set(listed))))


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(entries, max_size=12),
    strategy=st.sampled_from(Strategy),
    reason=st.none() | st.sampled_from(FallbackReason),
    version=st.none() | st.integers(min_value=0, max_value=2**40),
    user_id=st.none() | texts,
    item_id=st.none() | texts,
    variant=st.none() | st.sampled_from(["control", "canary", "treatment-2"]),
)
def test_render_writes_the_models_json(
    items: list[Any],
    strategy: Strategy,
    reason: str | None,
    version: int | None,
    user_id: str | None,
    item_id: str | None,
    variant: str | None,
) -> None:
    rendered = render(
        [(item, score, _details(found)) for item, score, found in items],
        strategy=strategy,
        reason=reason,
        version=version,
        user_id=user_id,
        item_id=item_id,
        recommendation_id="0" * 32,
        variant=variant,
    )
    expected = Recommendations(
        user_id=user_id,
        item_id=item_id,
        items=[
            ScoredItem(
                item_id=item,
                score=round(score, 6),
                title=found[0] if found else None,
                categories=sorted(set(found[1])) if found else None,
            )
            for item, score, found in items
        ],
        model_version=version,
        strategy=strategy,
        fallback_reason=reason,
        recommendation_id="0" * 32,
        variant=variant,
    )

    assert Recommendations.model_validate_json(rendered) == expected
    # The same fields in the same order (the cache swaps the last two of a stored body).
    assert list(json.loads(rendered)) == list(json.loads(expected.model_dump_json()))
    assert rendered.endswith('"cached":false,"cache_age_seconds":null}')


def _title(client: redis.Redis, item: str, title: str) -> None:
    client.hset(keys.item(item), mapping={"title": title, "categories": '["A"]'})


async def test_details_are_kept_while_the_catalogue_version_stays(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = ItemDetailsCache(FeatureReader(redis_client, PARTITIONS))
    _title(inspector, "i1", "Old title")

    assert await cache.get(["i1", "nope"], 1) == [ItemDetails("Old title", '["A"]'), None]
    _title(inspector, "i1", "New title")
    inspector.hset(keys.item("nope"), mapping={"title": "Now known"})

    # The same catalogue version: nothing is read again, unknown items included.
    assert await cache.get(["nope", "i1"], 1) == [None, ItemDetails("Old title", '["A"]')]
    # Any item write bumps the version: everything is read afresh.
    assert await cache.get(["nope", "i1"], 2) == [
        ItemDetails("Now known", "[]"),
        ItemDetails("New title", '["A"]'),
    ]


class GatedReader:
    """A reader whose answers wait for the test to open the gate: the race, made certain."""

    def __init__(self) -> None:
        self.titles: dict[str, str] = {}
        self.gate = asyncio.Event()

    async def item_details(self, item_ids: list[str]) -> list[ItemDetails | None]:
        answer = [ItemDetails(self.titles[item], "[]") for item in item_ids]
        await self.gate.wait()
        return list(answer)


async def test_a_read_that_a_newer_version_overtook_is_not_kept() -> None:
    reader = GatedReader()
    cache = ItemDetailsCache(reader)  # type: ignore[arg-type]
    reader.titles["i1"] = "As of version 1"
    older = asyncio.ensure_future(cache.get(["i1"], 1))
    await asyncio.sleep(0)  # its read is out
    reader.titles["i1"] = "As of version 2"
    newer = asyncio.ensure_future(cache.get(["i1"], 2))
    await asyncio.sleep(0)

    reader.gate.set()

    assert (await older)[0] == ItemDetails("As of version 1", "[]")
    assert (await newer)[0] == ItemDetails("As of version 2", "[]")
    # Version 2's entry is its own read, whichever answer landed last.
    assert (await cache.get(["i1"], 2))[0] == ItemDetails("As of version 2", "[]")


async def test_a_list_is_served_and_recorded_under_its_user(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    builder = ResponseBuilder(
        FeatureReader(redis_client, PARTITIONS), redis_client, record_ttl_seconds=60
    )
    _title(inspector, "i1", "One")

    body = Recommendations.model_validate_json(
        await builder.build([("i1", 0.5), ("i9", 0.25)], Strategy.POPULAR, user_id="u1")
    )
    name = keys.recommendation("u1", body.recommendation_id)
    await eventually(lambda: redis_client.execute("EXISTS", name))

    assert [(item.item_id, item.title) for item in body.items] == [("i1", "One"), ("i9", None)]
    record = ServedList.model_validate_json(inspector.get(name) or "")
    assert (record.user_id, record.items, record.strategy) == ("u1", ["i1", "i9"], "popular")
    assert name.startswith(keys.recommendations_of("u1"))
    assert 0 < inspector.ttl(name) <= 60


async def test_a_list_served_to_nobody_in_particular_is_recorded_apart(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    builder = ResponseBuilder(
        FeatureReader(redis_client, PARTITIONS), redis_client, record_ttl_seconds=60
    )

    body = Recommendations.model_validate_json(
        await builder.build([("i1", 0.5)], Strategy.SIMILAR, item_id="i0", version=3)
    )
    name = keys.recommendation(None, body.recommendation_id)
    await eventually(lambda: redis_client.execute("EXISTS", name))

    record = ServedList.model_validate_json(inspector.get(name) or "")
    assert (record.user_id, record.item_id, record.model_version) == (None, "i0", 3)


async def test_a_list_is_served_when_redis_refuses_its_record(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = await connect(server.url)
    try:
        builder = ResponseBuilder(FeatureReader(client, PARTITIONS), client, record_ttl_seconds=60)
        await client.execute("HSET", keys.item("i1"), "title", "One", "categories", "[]")
        await builder.build([("i1", 0.5)], Strategy.POPULAR, catalogue_version=1)  # details kept
        lost_before = REGISTRY.get_sample_value("recsys_recommendation_records_lost_total") or 0
        await client.execute("CONFIG", "SET", "maxmemory", "1")  # every write refused: OOM

        body = await builder.build([("i1", 0.5)], Strategy.POPULAR, catalogue_version=1)

        async def counted() -> bool:
            lost = REGISTRY.get_sample_value("recsys_recommendation_records_lost_total")
            return lost == lost_before + 1

        await eventually(counted)
        assert Recommendations.model_validate_json(body).items[0].title == "One"
    finally:
        await client.execute("CONFIG", "SET", "maxmemory", "0")
        await client.aclose()
        server.stop()
