"""Applying a batch renews its users' cache nonces on the Redis that holds the cached lists,
after the apply script, in the background; only users whose events were applied get a hash; a
Redis that does not answer costs stale lists until they expire, never an event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis
from prometheus_client import REGISTRY

from feature_store.applier import EventApplier
from feature_store.cache_nonces import CacheNonces
from feature_store.erasure import Eraser
from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient

P0 = keys.Partitions(1).all[0]
LIST_FIELD = keys.cache_field("-", "q1")


def lists_of(user: str) -> str:
    return keys.cached_lists(P0, user)


@pytest.fixture
def lists(ephemeral_server: RedisServer) -> Iterator[redis.Redis]:
    """The Redis holding the cached lists, as the gateway left them: a list and a nonce for
    ``reader``, and for ``bystander``, who sends nothing."""
    with ephemeral_server.inspector() as client:
        for user in ("reader", "bystander"):
            client.hset(lists_of(user), mapping={keys.CACHE_NONCE: "old", LIST_FIELD: "a list"})
            client.expire(lists_of(user), 300)
        yield client


@pytest.fixture
def applier(redis_client: RedisClient, ephemeral: RedisClient) -> EventApplier:
    return EventApplier(
        redis_client,
        history_cap=100,
        half_life_days=30,
        records=ephemeral,
        nonces=CacheNonces(ephemeral),
    )


async def test_a_batch_renews_the_nonces_of_the_users_it_applies(
    applier, lists, stream, make_event
) -> None:
    events = [make_event("reader", "i1"), make_event("newcomer", "i2"), make_event("reader", "i3")]

    result = await applier.apply(P0, await stream.deliver(events), now=0.0)

    assert result.applied == 3
    # The lists cached before the batch are gone with the old nonce; a new nonce each.
    for user in ("reader", "newcomer"):
        assert set(lists.hkeys(lists_of(user))) == {keys.CACHE_NONCE}
        assert lists.hget(lists_of(user), keys.CACHE_NONCE) != "old"
        assert 0 < lists.ttl(lists_of(user)) <= keys.CACHE_NONCE_TTL_SECONDS
    assert lists.hgetall(lists_of("bystander")) == {keys.CACHE_NONCE: "old", LIST_FIELD: "a list"}


async def test_every_batch_brings_a_nonce_not_seen_before(
    applier, lists, stream, make_event
) -> None:
    seen = {lists.hget(lists_of("reader"), keys.CACHE_NONCE)}
    for item in ("i1", "i2", "i3"):
        await applier.apply(P0, await stream.deliver([make_event("reader", item)]), now=0.0)
        seen.add(lists.hget(lists_of("reader"), keys.CACHE_NONCE))

    assert len(seen) == 4


async def test_an_erased_users_dropped_events_make_no_hash_for_them(
    applier, redis_client, ephemeral, lists, stream, make_event
) -> None:
    event = make_event("gone", "i1")  # sent before the erasure, applied after it
    await Eraser(redis_client, keys.Partitions(1), ephemeral=ephemeral).erase("gone")

    result = await applier.apply(P0, await stream.deliver([event]), now=0.0)

    assert (result.applied, result.erased) == (0, 1)
    assert lists.exists(lists_of("gone")) == 0


async def test_with_the_cache_redis_down_events_still_apply_and_the_failure_is_counted(
    applier, ephemeral_server, sync_redis, stream, make_event
) -> None:
    ephemeral_server.stop()
    failures = _nonce_failures()

    result = await applier.apply(P0, await stream.deliver([make_event("reader", "i1")]), now=0.0)

    assert result.applied == 1
    assert sync_redis.hexists(P0.user_items("reader"), "i1")
    assert _nonce_failures() == failures + 1


def _nonce_failures() -> float:
    return REGISTRY.get_sample_value("recsys_cache_nonce_failures_total") or 0.0


async def test_a_partitions_renewals_after_batches_run_one_at_a_time_in_the_background(
    ephemeral: RedisClient, lists
) -> None:
    nonces = CacheNonces(ephemeral)

    await nonces.renew(P0, ["reader"])
    await nonces.renew(P0, ["bystander"])  # waits for the first before it starts

    assert set(lists.hkeys(lists_of("reader"))) == {keys.CACHE_NONCE}
    await nonces.settle()
    assert set(lists.hkeys(lists_of("bystander"))) == {keys.CACHE_NONCE}


class _BrokenClient:
    """A client whose script call fails with what no Redis error maps to (a bug's error)."""

    async def run(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("not a Redis error")


async def test_an_unexpected_renewal_error_is_counted_and_never_fails_a_later_batch() -> None:
    nonces = CacheNonces(cast(RedisClient, _BrokenClient()))
    failures = _nonce_failures()

    await nonces.renew(P0, ["reader"])
    await nonces.renew(P0, ["reader"])  # waits for the failed one: must not raise its error
    await nonces.settle()

    assert _nonce_failures() == failures + 2
