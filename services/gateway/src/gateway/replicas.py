"""The recommender replicas the gateway spreads its reads over, each with its own circuit breaker.

They are the URLs of ``RECOMMENDER_URLS`` as written, or, with ``RECOMMENDER_DISCOVERY_SECONDS``
set, every address their host names resolve to, looked up again that often: on Kubernetes the
URL names a headless Service, whose name resolves to the address of each ready pod. Behind one
ordinary Service every pod is a single replica to the gateway: one pod's failures open the
breaker for all of them, a retry may land on the same pod, and an experiment's variant is
prepared on one pod only.

A replica keeps its breaker while its address keeps resolving; the breaker's gauge of an
address that no longer resolves is removed, so the series do not pile up with every pod ever
run. A lookup that fails or finds nothing leaves the replicas as they were.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from gateway import metrics
from gateway.breaker import CircuitBreaker
from recsys_shared.background import repeat
from recsys_shared.fastpath.http_client import Origin

log = logging.getLogger(__name__)

#: Resolves a host name to its addresses (``port`` as getaddrinfo takes it).
Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address ``host`` has (a headless Service: one per ready pod), sorted."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class Replica:
    url: str
    origin: Origin
    breaker: CircuitBreaker


class Replicas:
    """The current replicas, in turn: each call of :meth:`in_turn` starts one further on."""

    def __init__(
        self,
        urls: list[str],
        *,
        failures: int,
        reset_seconds: float,
        resolve: Resolve = resolve_all,
    ) -> None:
        self.urls, self.resolve = urls, resolve
        self._breaker = functools.partial(
            CircuitBreaker, failures=failures, reset_seconds=reset_seconds
        )
        self._known: dict[str, Replica] = {}
        self.current = self._replicas(urls)
        self._turn = 0

    def in_turn(self) -> list[Replica]:
        current = self.current
        start = self._turn % len(current)
        self._turn += 1
        return current[start:] + current[:start]

    async def refresh(self) -> None:
        """Look the URLs' host names up again; each address found is a replica."""
        try:
            found = [url for base in self.urls for url in await self._addresses_of(base)]
        except OSError as error:
            log.warning("recommender discovery: lookup failed, replicas kept: %s", error)
            return
        if not found:
            log.warning("recommender discovery: no address found, replicas kept")
            return
        self.current = self._replicas(found)

    async def keep_refreshing(self, every_seconds: float) -> NoReturn:
        """:meth:`refresh` every ``every_seconds`` until cancelled; an address that makes no
        URL is logged and the loop goes on."""
        await repeat(self.refresh, pause=every_seconds, survives=(ValueError,), on_error=_logged)

    async def _addresses_of(self, base: str) -> list[str]:
        parts = urlsplit(base)
        host, port = parts.hostname or "", parts.port or 80
        addresses = await self.resolve(host, port)
        return [f"http://{_bracketed(address)}:{port}{parts.path}" for address in addresses]

    def _replicas(self, urls: list[str]) -> list[Replica]:
        """Replicas for ``urls``, keeping the breakers of those known; the gauges of the others
        go."""
        replicas = [self._known.get(url) or self._new(url) for url in urls]
        for gone in set(self._known) - set(urls):
            metrics.BREAKER_OPEN.remove(gone)
        self._known = {replica.url: replica for replica in replicas}
        return replicas

    def _new(self, url: str) -> Replica:
        return Replica(url, Origin.from_url(url), self._breaker(url))


def _bracketed(address: str) -> str:
    """An address as a URL's host: an IPv6 one (the only kind with colons) in brackets."""
    return f"[{address}]" if ":" in address else address


def _logged(error: ValueError) -> None:
    log.warning("recommender discovery: replicas kept: %s", error)
