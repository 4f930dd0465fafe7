"""Near Redis's memory limit, list records (and cache entries) are shed so events still fit."""

from __future__ import annotations

from pathlib import Path

from recsys_shared import keys
from recsys_shared.features import FeatureReader
from recsys_shared.memory_guard import RESUME_MARGIN, MemoryGuard, memory_used_ratio, serving_guards
from recsys_shared.metrics import REGISTRY
from recsys_shared.processes import RedisServer
from recsys_shared.redis import connect
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import Recommendations, Strategy


def _shed(kind: str) -> float:
    return REGISTRY.get_sample_value("recsys_ephemeral_writes_shed_total", {"kind": kind}) or 0


def test_the_ratio_is_read_from_info_memory() -> None:
    info = "# Memory\r\nused_memory:300\r\nused_memory_human:300B\r\nmaxmemory:1200\r\n"
    assert memory_used_ratio(info) == 0.25
    assert memory_used_ratio(info.replace("maxmemory:1200", "maxmemory:0")) is None


def test_shedding_starts_at_the_mark_and_stops_only_below_its_margin() -> None:
    guard = MemoryGuard(None, high_water=0.9)  # type: ignore[arg-type]  # observe() only
    before = _shed("record")
    steps = [0.5, 0.9, 0.87, 0.9 - RESUME_MARGIN - 0.01, 0.95, None]
    states = []
    for ratio in steps:
        guard.observe(ratio)
        states.append(guard.shed("record"))
    assert states == [False, True, True, False, True, False]
    assert _shed("record") == before + 3
    ratio = REGISTRY.get_sample_value("recsys_redis_memory_used_ratio", {"redis": "main"})
    assert ratio == 0.0  # no limit


async def test_near_maxmemory_records_are_shed_and_events_still_fit(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = await connect(server.url)
    guard = MemoryGuard(client, high_water=0.9)
    builder = ResponseBuilder(
        FeatureReader(client, keys.Partitions(1)), client, record_ttl_seconds=60, memory_guard=guard
    )
    try:
        # Features enough that a few kilobytes of connection buffers do not move the ratio.
        await client.execute_many([("SET", f"feature:{n}", "x" * 1000) for n in range(5000)])
        used = int(memory_info(await client.execute("INFO", "memory"))["used_memory"])
        await client.execute("CONFIG", "SET", "maxmemory", str(int(used / 0.93)))
        await guard.check()
        shed_before = _shed("record")

        body = Recommendations.model_validate_json(
            await builder.build([("i1", 0.5)], Strategy.POPULAR, user_id="u1")
        )
        await client.ping()  # a record SET, had one been sent, has been answered by now

        assert guard.shedding
        assert body.items[0].item_id == "i1"  # the list is still served
        assert (
            await client.execute("EXISTS", keys.recommendation("u1", body.recommendation_id)) == 0
        )
        assert _shed("record") == shed_before + 1
        # The headroom is left for what must not be lost: an event still goes in.
        assert await client.execute("XADD", keys.Partition(0).events, "*", "e", "{}")

        await client.execute("CONFIG", "SET", "maxmemory", "0")
        await guard.check()
        kept = Recommendations.model_validate_json(
            await builder.build([("i1", 0.5)], Strategy.POPULAR, user_id="u1")
        )
        await client.ping()
        assert not guard.shedding
        assert (
            await client.execute("EXISTS", keys.recommendation("u1", kept.recommendation_id)) == 1
        )
    finally:
        await client.aclose()
        server.stop()


def memory_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_with_an_ephemeral_redis_its_guard_sheds_and_the_main_one_is_only_watched() -> None:
    main, ephemeral = object(), object()

    shedding, watching = serving_guards(main, ephemeral, high_water=0.9)  # type: ignore[arg-type]
    watching.observe(0.95)  # the main Redis full: not a reason to stop caching elsewhere
    shedding.observe(0.5)

    assert (shedding.redis, watching.redis) == (ephemeral, main)
    assert not watching.shedding
    assert not shedding.shedding
    assert REGISTRY.get_sample_value("recsys_redis_memory_used_ratio", {"redis": "main"}) == 0.95
    assert (
        REGISTRY.get_sample_value("recsys_redis_memory_used_ratio", {"redis": "ephemeral"}) == 0.5
    )
    shedding.observe(0.92)
    assert shedding.shed("cache")
    assert serving_guards(main, main, high_water=0.9)[0].redis is main  # type: ignore[arg-type]
