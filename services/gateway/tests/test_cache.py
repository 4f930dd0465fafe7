"""The response cache: never a list from an older model version or from before the user's
latest applied event (each entry names the version and the user's nonce it was ranked for);
one computation for concurrent misses; bounded per user."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway.breaker import CircuitBreaker
from gateway.cache import (
    NO_VARIANT,
    CatalogueRemovals,
    Lookup,
    ResponseCache,
    cached_json,
    query_digest,
)
from recsys_shared import keys
from recsys_shared.active_version import ActiveVersion
from recsys_shared.fastpath.http_client import HttpResponse
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import (
    FallbackReason,
    RecommendationQuery,
    Recommendations,
    ScoredItem,
    Strategy,
)
from recsys_shared.testing import ok_body
from recsys_shared.testing.waiting import eventually

USER = "u:1"  # a ':' in the id must not confuse the key layout
PARTITIONS = keys.Partitions(1)
LISTS = keys.cached_lists(PARTITIONS.of(USER), USER)  # the user's hash of cached lists
DEFAULT_FIELD = keys.cache_field(NO_VARIANT, query_digest(RecommendationQuery()))


def _activate(gateway: Any, store: redis.Redis, version: int) -> None:
    """Make ``version`` the active one, and the gateway learn it (as its follower would on
    the registry's announcement)."""
    store.set(keys.MODEL_ACTIVE, version)
    gateway.client.portal.call(gateway.state.reads.cache.active.refresh)


def _renew_nonce(store: redis.Redis, lists: str = LISTS, nonce: str = "renewed") -> None:
    """What the feature-store does after every applied batch of the user's events."""
    store.hset(lists, keys.CACHE_NONCE, nonce)


async def _cache(
    client: RedisClient, active_version: int | None = None, **options: Any
) -> ResponseCache:
    active = ActiveVersion(ModelRegistry(client), poll_seconds=60)
    if active_version is not None:
        await client.execute("SET", keys.MODEL_ACTIVE, active_version)
        await active.refresh()
    removals = CatalogueRemovals(client)
    await removals.refresh()
    return ResponseCache(client, PARTITIONS, active, removals, ttl_seconds=60, **options)


def _answer(version: int, item: str = "m1") -> Recommendations:
    return Recommendations(
        user_id=USER,
        items=[ScoredItem(item_id=item, score=0.5)],
        model_version=version,
        strategy=Strategy.PERSONALIZED,
        recommendation_id=f"rec-{version}-{item}",
    )


def _serve(gateway: Any, answer: list[Recommendations]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answer[0].model_dump_json())

    gateway.recommender.handler = handler


def _get(gateway: Any, headers: dict[str, str]) -> dict[str, Any]:
    return ok_body(gateway.client.get(f"/v1/users/{USER}/recommendations", headers=headers))


def _get_and_store(
    gateway: Any, headers: dict[str, str], store: redis.Redis, lists: str = LISTS, stamp: str = ""
) -> dict[str, Any]:
    """A GET, then until its list is in the cache (under ``stamp``, when one is given): the
    answer does not wait for the store."""
    body = _get(gateway, headers)

    def stored() -> bool:
        entry = store.hget(lists, DEFAULT_FIELD)
        return entry is not None and entry.startswith(stamp)

    wait_until(stored, timeout=5, what="the list stored")
    return body


def test_a_second_request_is_served_from_the_cache_with_its_age(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    _activate(gateway, store, 3)
    _serve(gateway, [_answer(3)])

    first = _get_and_store(gateway, client_headers, store)
    second = _get(gateway, client_headers)

    assert first["cached"] is False
    assert first["cache_age_seconds"] is None
    assert second["cached"] is True
    assert second["cache_age_seconds"] >= 0
    assert second["items"] == first["items"]
    assert second["recommendation_id"] == first["recommendation_id"]
    assert len(gateway.recommender.requests) == 1
    assert store.hkeys(LISTS) == [DEFAULT_FIELD]
    assert 0 < store.ttl(LISTS) <= gateway.settings.cache_ttl_seconds


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_new_event_of_the_user_makes_the_cached_list_unreachable(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str], partitions: int
) -> None:
    gateway = make_gateway(event_partitions=partitions)
    _activate(gateway, store, 3)
    answer = [_answer(3, "before")]
    _serve(gateway, answer)
    lists = keys.cached_lists(keys.Partitions(partitions).of(USER), USER)
    assert _get_and_store(gateway, client_headers, store, lists)["items"][0]["item_id"] == "before"
    assert _get(gateway, client_headers)["cached"] is True

    _renew_nonce(store, lists)
    answer[0] = _answer(3, "after")

    body = _get(gateway, client_headers)
    assert body["cached"] is False
    assert body["items"][0]["item_id"] == "after"


def test_a_new_model_version_makes_the_cached_list_unreachable(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    _activate(gateway, store, 3)
    answer = [_answer(3)]
    _serve(gateway, answer)
    _get(gateway, client_headers)

    _activate(gateway, store, 4)
    answer[0] = _answer(4)

    body = _get(gateway, client_headers)
    assert body["cached"] is False
    assert body["model_version"] == 4


@pytest.mark.parametrize(
    ("method", "body", "removed"),
    [
        ("DELETE", None, True),
        ("PATCH", {"available": False}, True),
        ("PATCH", {"title": "A new title"}, False),  # still recommendable: the entry stays
    ],
)
def test_an_item_removed_through_this_gateway_leaves_its_cached_lists_at_once(
    gateway: Any,
    store: redis.Redis,
    client_headers: dict[str, str],
    method: str,
    body: dict[str, Any] | None,
    removed: bool,
) -> None:
    _activate(gateway, store, 3)
    answer = [_answer(3, "gone")]
    _serve(gateway, answer)
    _get_and_store(gateway, client_headers, store)
    item = {keys.ITEM_TITLE: "Gone", keys.ITEM_AVAILABLE: "1", keys.ITEM_UPDATED_AT: "2026-12-01"}
    store.hset(keys.item("gone"), mapping=item)

    def feature_store(request: httpx.Request) -> httpx.Response:
        # What write_item.lua does when an item stops being recommendable.
        if removed:
            store.incr(keys.CATALOGUE_REMOVALS)
        return httpx.Response(204) if method == "DELETE" else httpx.Response(200, json={})

    gateway.feature_store.handler = feature_store
    written = gateway.client.request(method, "/v1/items/gone", json=body, headers=client_headers)
    assert written.status_code < 300, written.text
    answer[0] = _answer(3, "another")

    # The very next request, with no announcement heard: this gateway re-read the count.
    again = _get(gateway, client_headers)
    assert again["cached"] is not removed
    assert again["items"][0]["item_id"] == ("another" if removed else "gone")


def test_a_list_from_a_replica_still_on_the_old_version_is_not_stored(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    _activate(gateway, store, 4)
    _serve(gateway, [_answer(3)])  # the replica has not loaded version 4 yet

    _get(gateway, client_headers)
    body = _get(gateway, client_headers)

    assert body["cached"] is False
    assert body["model_version"] == 3
    assert store.exists(LISTS) == 0


def test_fallback_lists_are_never_cached(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    _activate(gateway, store, 3)  # every replica refuses connections: the fallback answers
    first = _get(gateway, client_headers)
    assert first["strategy"] == "popular"
    assert store.exists(LISTS) == 0


async def test_the_lookup_builds_the_key_the_way_keys_py_does(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = await _cache(redis_client, active_version=7)
    query = RecommendationQuery(k=5, category="a:b")
    _renew_nonce(inspector, nonce="n12")

    lookup = await cache.lookup(USER, query)
    assert (lookup.key, lookup.field) == (LISTS, keys.cache_field(NO_VARIANT, query_digest(query)))
    assert (lookup.version, lookup.nonce, lookup.entry) == (7, "n12", None)

    cache.store(lookup, 7, _answer(7).model_dump_json())
    await eventually(lambda: _has_entry(cache, query))
    again = await cache.lookup(USER, query)
    body = json.loads(cached_json(again))
    assert body["model_version"] == 7
    assert body["cached"] is True
    assert 0 <= body["cache_age_seconds"] < 5
    # The stored value names what it was ranked for:
    # "<version>:<catalogue removals>:<nonce>:<stored at>\n<JSON>".
    assert (inspector.hget(LISTS, lookup.field) or "").startswith("7:0:n12:")


async def _has_entry(cache: ResponseCache, query: RecommendationQuery) -> bool:
    return (await cache.lookup(USER, query)).entry is not None


def _entry(
    version: int | str | None, nonce: str, body: str, *, age: float = 0.0, removals: str = "0"
) -> str:
    return f"{version}:{removals}:{nonce}:{time.time() - age!r}\n{body}"


@pytest.mark.parametrize(
    ("stamp", "hit"),
    [
        (("7", "n12", "2"), True),
        (("6", "n12", "2"), False),  # ranked by an older version
        (("70", "n12", "2"), False),  # a version that merely starts with the active one
        (("7", "n11", "2"), False),  # ranked before the user's latest applied event
        (("7", "n1", "2"), False),  # a nonce that is a prefix of the current one
        (("7", "n120", "2"), False),
        (("7", "-", "2"), False),  # ranked before the user had a nonce
        (("7", "n12", "1"), False),  # ranked before an item left the catalogue
        (("7", "n12", "0"), False),
    ],
)
async def test_an_entry_stamped_with_another_version_nonce_or_removals_is_a_miss(
    redis_client: RedisClient, inspector: redis.Redis, stamp: tuple[str, str, str], hit: bool
) -> None:
    inspector.set(keys.CATALOGUE_REMOVALS, 2)
    cache = await _cache(redis_client, active_version=7)
    _renew_nonce(inspector, nonce="n12")
    version, nonce, removals = stamp
    body = _answer(7).model_dump_json()
    inspector.hset(LISTS, DEFAULT_FIELD, _entry(version, nonce, body, removals=removals))

    lookup = await cache.lookup(USER, RecommendationQuery())

    if hit:
        # The stamp and the time are cut off: what is left is the JSON, served as it is.
        assert json.loads(cached_json(lookup))["recommendation_id"] == "rec-7-m1"
    else:
        assert lookup.entry is None


async def test_an_unstamped_entry_a_user_without_nonce_and_no_active_version(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = await _cache(redis_client)
    query = RecommendationQuery()
    body = _answer(3).model_dump_json()
    # No active version: never a hit, and nothing may be stored.
    inspector.hset(LISTS, DEFAULT_FIELD, _entry(None, "-", body))
    lookup = await cache.lookup(USER, query)
    assert (lookup.version, lookup.nonce, lookup.entry) == (None, "-", None)

    await redis_client.execute("SET", keys.MODEL_ACTIVE, 3)
    await cache.active.refresh()
    # An entry in the format before the stamp ("<stored at>\n<JSON>") is never served.
    inspector.hset(LISTS, DEFAULT_FIELD, f"{time.time()!r}\n{body}")
    assert (await cache.lookup(USER, query)).entry is None
    # No event since the user's hash expired: no nonce, read as "-".
    inspector.hset(LISTS, DEFAULT_FIELD, _entry(3, "-", body))
    assert (await cache.lookup(USER, query)).entry is not None


async def test_an_entry_older_than_the_ttl_is_a_miss_while_its_hash_lives(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = await _cache(redis_client, active_version=7)
    body = _answer(7).model_dump_json()
    inspector.hset(LISTS, DEFAULT_FIELD, _entry(7, "-", body, age=cache.ttl_seconds + 1))
    assert (await cache.lookup(USER, RecommendationQuery())).entry is None

    inspector.hset(LISTS, DEFAULT_FIELD, _entry(7, "-", body, age=cache.ttl_seconds - 5))
    hit = await cache.lookup(USER, RecommendationQuery())
    assert hit.entry is not None
    assert cache.ttl_seconds - 6 < hit.age_seconds < cache.ttl_seconds


async def test_a_list_ranked_before_a_renewal_is_not_served_after_it_whenever_it_lands(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = await _cache(redis_client, active_version=7)
    query = RecommendationQuery()
    _renew_nonce(inspector, nonce="before")
    lookup = await cache.lookup(USER, query)  # the miss whose list is then computed

    _renew_nonce(inspector, nonce="after")  # an event of the user applied meanwhile
    cache.store(lookup, 7, _answer(7).model_dump_json())
    await eventually(lambda: _stored(inspector, lookup))

    assert (await cache.lookup(USER, query)).entry is None


async def test_a_users_hash_holds_a_bounded_number_of_lists_and_keeps_its_nonce(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    cache = await _cache(redis_client, active_version=7)
    _renew_nonce(inspector, nonce="n1")
    most = keys.CACHE_LISTS_PER_USER
    for k in range(1, 2 * most + 1):
        lookup = await cache.lookup(USER, RecommendationQuery(k=k))
        cache.store(lookup, 7, _answer(7).model_dump_json())
        await eventually(lambda lookup=lookup: _stored(inspector, lookup))
        assert inspector.hlen(LISTS) <= most

    assert inspector.hget(LISTS, keys.CACHE_NONCE) == "n1"
    newest = await cache.lookup(USER, RecommendationQuery(k=2 * most))
    assert newest.entry is not None


async def _stored(inspector: redis.Redis, lookup: Lookup) -> bool:
    return inspector.hexists(lookup.key, lookup.field)


def test_a_stale_entry_is_replaced_by_the_fresh_list(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    _activate(gateway, store, 4)
    store.hset(LISTS, DEFAULT_FIELD, _entry(3, "-", _answer(3, "stale").model_dump_json()))
    _serve(gateway, [_answer(4, "fresh")])

    first = _get_and_store(gateway, client_headers, store, stamp="4:0:")
    second = _get(gateway, client_headers)

    assert (first["cached"], first["items"][0]["item_id"]) == (False, "fresh")
    assert (second["cached"], second["items"][0]["item_id"]) == (True, "fresh")
    assert (store.hget(LISTS, DEFAULT_FIELD) or "").startswith("4:0:-:")
    assert len(gateway.recommender.requests) == 1


class _HoldingFirstBatch:
    """The recommenders' fake transport (conftest's ``MockUpstream``), holding the first
    batch until ``release`` is set; ``batches`` are those that reached the fake."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.batches: list[dict[str, Any]] = fake.batches
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = await self.fake.get(*args, **kwargs)
        return response

    async def post(self, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        response: HttpResponse = await self.fake.post(*args, **kwargs)
        return response


@pytest.mark.parametrize("change", ["event", "version"])
def test_a_miss_after_a_change_does_not_join_a_computation_from_before_it(
    gateway: Any, store: redis.Redis, change: str
) -> None:
    _activate(gateway, store, 3)
    _serve(gateway, [_answer(3)])
    reads = gateway.state.reads
    upstream = _HoldingFirstBatch(reads.recommenders.http)
    reads.recommenders.http = upstream

    async def scenario() -> None:
        query = RecommendationQuery()
        before = asyncio.create_task(reads.for_user(USER, query))
        try:
            await upstream.entered.wait()  # its list is being computed
            if change == "event":
                await reads.cache.entries.execute("HSET", LISTS, keys.CACHE_NONCE, "renewed")
            else:
                await reads.cache.entries.execute("SET", keys.MODEL_ACTIVE, 4)
                await reads.cache.active.refresh()
            # A list asked after the change is computed for it, without waiting for the one
            # computed before it (a failure waits the 5 s bound, then says so).
            await asyncio.wait_for(reads.for_user(USER, query), timeout=5)
            assert len(upstream.batches) == 1  # its own batch; the first one is still held
        finally:
            upstream.release.set()
            await before
        assert len(upstream.batches) == 2

    gateway.client.portal.call(scenario)


async def test_concurrent_misses_compute_once(redis_client: RedisClient) -> None:
    cache = await _cache(redis_client)
    calls = 0

    async def compute() -> Recommendations:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return _answer(1)

    results = await asyncio.gather(*(cache.single_flight("k", compute) for _ in range(20)))

    assert calls == 1
    assert {result.recommendation_id for result in results} == {"rec-1-m1"}
    assert await cache.single_flight("k", compute) is not None
    assert calls == 2  # after the flight lands, the next miss computes again


async def test_a_miss_joined_to_a_cancelled_computation_computes_its_own(
    redis_client: RedisClient,
) -> None:
    # The first request's computation is cancelled (its request timed out, or its client
    # went away): the requests that joined it were not, and must not inherit the cancel.
    cache = await _cache(redis_client, active_version=1)
    started = asyncio.Event()
    calls = 0

    async def compute() -> Recommendations:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.2)
        return _answer(1)

    first = asyncio.create_task(cache.single_flight("k", compute))
    await started.wait()
    joined = asyncio.create_task(cache.single_flight("k", compute))
    await asyncio.sleep(0.01)
    first.cancel()

    assert (await joined).recommendation_id == "rec-1-m1"
    assert first.cancelled()
    assert calls == 2


async def test_no_entry_is_stored_while_redis_is_near_its_memory_limit(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    guard = MemoryGuard(redis_client, high_water=0.9)
    cache = await _cache(redis_client, active_version=1, memory_guard=guard)
    query = RecommendationQuery(k=5)
    lookup = await cache.lookup(USER, query)

    guard.observe(0.95)  # as INFO memory would report it near maxmemory
    shed_before = _shed_cache_writes()
    cache.store(lookup, 1, _answer(1).model_dump_json())
    # Skipped, not sent: counted as shed, and nothing is in Redis.
    assert _shed_cache_writes() == shed_before + 1
    assert inspector.exists(lookup.key) == 0

    guard.observe(0.5)
    cache.store(lookup, 1, _answer(1).model_dump_json())
    await eventually(lambda: _has_entry(cache, query))


def _shed_cache_writes() -> float:
    return REGISTRY.get_sample_value("recsys_ephemeral_writes_shed_total", {"kind": "cache"}) or 0.0


_texts = st.text(max_size=20)
_lists = st.builds(
    Recommendations,
    user_id=st.none() | _texts,
    item_id=st.none() | _texts,
    items=st.lists(
        st.builds(
            ScoredItem,
            item_id=st.text(min_size=1, max_size=20),
            score=st.floats(allow_nan=False, allow_infinity=False),
            title=st.none() | _texts,
            categories=st.none() | st.lists(_texts, max_size=3),
            exploration=st.none() | st.just(True),
        ),
        max_size=6,
    ),
    model_version=st.none() | st.integers(min_value=1, max_value=2**53),
    strategy=st.sampled_from(Strategy),
    fallback_reason=st.none() | st.sampled_from(FallbackReason),
    recommendation_id=st.text(min_size=1, max_size=32),
    variant=st.none() | st.sampled_from(["control", "canary", "treatment-1"]),
)


@settings(max_examples=300, deadline=None)
@given(answer=_lists, age=st.floats(min_value=0, max_value=1e7), spaced=st.booleans())
def test_a_hit_is_the_stored_lists_json_marked_cached_on_any_list(
    answer: Recommendations, age: float, spaced: bool
) -> None:
    """The hand-written hit (two fields swapped at the end of the stored JSON) is the model's
    own JSON with cached and its age, on any list; a body stored with other separators (an
    older gateway's) takes the parsing way to the same answer."""
    stored = answer.model_dump_json()
    if spaced:
        stored = json.dumps(json.loads(stored))

    served = cached_json(Lookup("lists", "field", 1, "n1", entry=stored, age_seconds=age))

    expected = answer.model_copy(update={"cached": True, "cache_age_seconds": round(age, 3)})
    assert Recommendations.model_validate_json(served) == expected
    assert list(json.loads(served)) == list(json.loads(stored))


def _cache_errors() -> float:
    labels = {"service": "cache", "error": "StoreUnavailable"}
    return REGISTRY.get_sample_value("recsys_upstream_errors_total", labels) or 0.0


async def test_with_its_redis_gone_lookups_miss_at_once_until_it_answers_again(
    own_redis: RedisServer,
) -> None:
    client = await connect(own_redis.url, command_timeout=0.3)
    breaker = CircuitBreaker("cache-under-test", failures=2, reset_seconds=0.5)
    cache = await _cache(client, active_version=1, breaker=breaker)
    query = RecommendationQuery()
    try:
        own_redis.stop()
        for _ in range(2):  # each waits for Redis, fails, and counts
            assert (await cache.lookup(USER, query)).version is None
        failed = _cache_errors()

        for _ in range(20):  # open: a miss without a command, so nothing waits or fails
            lookup = await cache.lookup(USER, query)
            assert (lookup.version, lookup.entry) == (None, None)
        assert _cache_errors() == failed

        own_redis.start()

        async def answering() -> bool:
            return (await cache.lookup(USER, query)).version == 1  # the half-open trial

        await eventually(answering, within=10)
        assert breaker.opened_at is None
    finally:
        await client.aclose()
