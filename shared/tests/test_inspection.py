"""The erasure test's search through a Redis: it finds a text wherever a Redis can hold it,
so an empty answer means the text is not there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from recsys_shared.testing.inspection import occurrences

NEEDLE = "who:7"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_text_is_found_in_every_part_of_every_type(raw: redis.Redis) -> None:
    raw.set(f"name:{NEEDLE}", "x")
    raw.set("string", b"\x00\xff binary, then " + NEEDLE.encode())
    raw.hset("hash-field", NEEDLE, "x")
    raw.hset("hash-value", "x", f"[{NEEDLE}]")
    raw.rpush("list", "x", NEEDLE)
    raw.sadd("set", NEEDLE, "x")
    raw.zadd("zset", {NEEDLE: 1.0, "x": 2.0})
    entry = raw.xadd("stream", {"e": f'{{"user_id": "{NEEDLE}"}}'})
    field_entry = raw.xadd("stream-field", {NEEDLE: "x"})
    raw.set("innocent", "who:70 is someone else")  # contains the text too: found as well
    raw.set("elsewhere", "nothing")

    found = {(item.key.decode(), item.kind, item.part) for item in occurrences(raw, NEEDLE)}

    assert found == {
        (f"name:{NEEDLE}", "string", "name"),
        ("string", "string", "value"),
        ("hash-field", "hash", "field"),
        ("hash-value", "hash", "value"),
        ("list", "list", "element"),
        ("set", "set", "member"),
        ("zset", "zset", "member"),
        ("stream", "stream", f"entry {entry.decode()}"),
        ("stream-field", "stream", f"entry {field_entry.decode()}"),
        ("innocent", "string", "value"),
    }


def test_nothing_is_found_where_the_text_is_not(raw: redis.Redis) -> None:
    raw.hset("hash", "who", "7")  # the parts, apart
    raw.xadd("stream", {"who": ":7"})

    assert occurrences(raw, NEEDLE) == []
