"""Looking through everything a Redis holds for a piece of text: key names, string values,
hash fields and values, list elements, set and sorted-set members, stream entries.

What the erasure test uses to show that nothing names an erased user; a test should first
show that it finds the user before the erasure, so an empty answer means something.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis

_BATCH = 1000


@dataclass(frozen=True)
class Occurrence:
    """Where the text was found: the key, its type, and which part of it (``name``,
    ``value``, ``field``, ``element``, ``member``, or ``entry <id>``)."""

    key: bytes
    kind: str
    part: str
    value: bytes

    def __str__(self) -> str:
        shown = self.value[:120].decode(errors="replace")
        return f"{self.key.decode(errors='replace')} ({self.kind}, {self.part}): {shown}"


def occurrences(client: redis.Redis, text: str) -> list[Occurrence]:
    """Every place of one Redis server (the database ``client`` is on) that contains ``text``
    (as UTF-8 bytes). ``client`` must not decode responses: values may be binary."""
    needle = text.encode()
    found: list[Occurrence] = []
    for name in client.scan_iter(count=_BATCH):
        key = _bytes(name)
        kind = _bytes(client.type(key)).decode()
        if needle in key:
            found.append(Occurrence(key, kind, "name", key))
        for part, value in _contents(client, key, kind):
            if needle in value:
                found.append(Occurrence(key, kind, part, value))
    return found


def _contents(client: redis.Redis, key: bytes, kind: str) -> Iterator[tuple[str, bytes]]:
    """Each stored piece of a key, named by what it is."""
    pieces: Iterable[tuple[str, object]]
    if kind == "string":
        pieces = [("value", client.get(key))]
    elif kind == "hash":
        pieces = (
            (part, piece)
            for field, value in client.hscan_iter(key, count=_BATCH)
            for part, piece in (("field", field), ("value", value))
        )
    elif kind == "list":
        pieces = (("element", element) for element in client.lrange(key, 0, -1))
    elif kind == "set":
        pieces = (("member", member) for member in client.sscan_iter(key, count=_BATCH))
    elif kind == "zset":
        pieces = (("member", member) for member, _ in client.zscan_iter(key, count=_BATCH))
    elif kind == "stream":
        pieces = (
            (f"entry {_bytes(entry_id).decode()}", piece)
            for entry_id, fields in client.xrange(key) or []
            for field, value in (fields or {}).items()
            for piece in (field, value)
        )
    elif kind == "none":  # gone since the scan saw it
        pieces = []
    else:
        raise AssertionError(f"key {key!r} has type {kind}, which this inspection cannot read")
    for part, piece in pieces:
        if piece is not None:
            yield part, _bytes(piece)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a client that decodes: the text, as the server holds it
        return value.encode()
    raise TypeError(f"expected bytes from Redis, got {type(value).__name__}: {value!r}")


def occurrences_in(clients: Iterable[redis.Redis], text: str) -> list[Occurrence]:
    """:func:`occurrences` over several servers (every primary of a cluster, say)."""
    return [found for client in clients for found in occurrences(client, text)]
