"""Recommender replicas found by name (RECOMMENDER_DISCOVERY_SECONDS): every address a headless
Service's name resolves to is a replica with a breaker of its own, reached by every prepare,
and the set follows the pods as they come and go."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gateway.clients import RecommenderClient
from gateway.replicas import Replicas, resolve_all
from recsys_shared.background import stop_tasks
from recsys_shared.errors import UpstreamUnavailable
from recsys_shared.schemas import Recommendations, Strategy
from recsys_shared.testing import eventually

SERVICE = "http://recommender-pods:8101"


class Dns:
    """Stands in for the cluster's DNS: ``addresses`` is what the name resolves to now."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.failing = False

    async def __call__(self, host: str, port: int) -> list[str]:
        assert (host, port) == ("recommender-pods", 8101)
        if self.failing:
            raise socket.gaierror("Temporary failure in name resolution")
        return list(self.addresses)


def _a_list(request: httpx.Request) -> httpx.Response:
    body = Recommendations(
        user_id="u1",
        items=[],
        model_version=1,
        strategy=Strategy.PERSONALIZED,
        recommendation_id="r-1",
    ).model_dump_json()
    return httpx.Response(200, content=body)


def _broken_pod(address: str) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == address:
            return httpx.Response(500, content=b"{}")
        return _a_list(request)

    return handler


def _breaker_gauge(url: str) -> float | None:
    return REGISTRY.get_sample_value("recsys_circuit_breaker_open", {"replica": url})


async def _discovered(dns: Dns) -> Replicas:
    replicas = Replicas([SERVICE], failures=2, reset_seconds=60, resolve=dns)
    await replicas.refresh()
    return replicas


async def test_each_address_is_a_replica_with_a_breaker_of_its_own(upstream: Any) -> None:
    replicas = await _discovered(Dns("10.0.0.1", "10.0.0.2"))
    upstream.service.handler = _broken_pod("10.0.0.2")
    client = RecommenderClient(upstream, replicas)

    for _ in range(6):
        await client.get("/users/u1/recommendations?k=3")

    # The broken pod failed twice and its breaker opened; the other kept answering, its closed.
    assert upstream.service.calls_to("10.0.0.2") == 2
    assert upstream.service.calls_to("10.0.0.1") == 6
    assert [replica.url for replica in replicas.current] == [
        "http://10.0.0.1:8101",
        "http://10.0.0.2:8101",
    ]
    assert _breaker_gauge("http://10.0.0.2:8101") == 1
    assert _breaker_gauge("http://10.0.0.1:8101") == 0


async def test_a_prepare_reaches_every_pod(upstream: Any) -> None:
    client = RecommenderClient(upstream, await _discovered(Dns("10.0.0.1", "10.0.0.2")))
    upstream.service.handler = lambda request: httpx.Response(200, content=b"{}")

    await client.prepare(7)

    assert upstream.service.calls_to("10.0.0.1") == 1
    assert upstream.service.calls_to("10.0.0.2") == 1


async def test_the_replicas_follow_the_pods_keeping_the_breakers_of_those_that_stay() -> None:
    dns = Dns("10.0.0.1", "10.0.0.2")
    replicas = await _discovered(dns)
    staying = replicas.current[0].breaker
    staying.failed()
    gone = "http://10.0.0.2:8101"
    assert _breaker_gauge(gone) == 0

    dns.addresses = ["10.0.0.1", "10.0.0.3"]  # one pod replaced by a new one
    await replicas.refresh()

    assert [replica.url for replica in replicas.current] == [
        "http://10.0.0.1:8101",
        "http://10.0.0.3:8101",
    ]
    assert replicas.current[0].breaker is staying
    assert staying.failures == 1
    assert _breaker_gauge(gone) is None  # no series left behind by every pod ever run


async def test_the_replicas_are_looked_up_again_while_the_gateway_runs() -> None:
    dns = Dns("10.0.0.1")
    replicas = await _discovered(dns)
    refresher = asyncio.create_task(replicas.keep_refreshing(0.01))
    try:
        dns.addresses = ["10.0.0.4", "10.0.0.5"]  # a rollout replaced the pod

        async def followed() -> bool:
            return len(replicas.current) == 2

        await eventually(followed, within=5)
    finally:
        await stop_tasks(refresher)

    assert [replica.url for replica in replicas.current] == [
        "http://10.0.0.4:8101",
        "http://10.0.0.5:8101",
    ]


@pytest.mark.parametrize("outage", ["lookup fails", "no address"])
async def test_a_failed_or_empty_lookup_keeps_the_replicas(outage: str) -> None:
    dns = Dns("10.0.0.1", "10.0.0.2")
    replicas = await _discovered(dns)
    before = replicas.current
    if outage == "lookup fails":
        dns.failing = True
    else:
        dns.addresses = []

    await replicas.refresh()

    assert replicas.current == before


async def test_an_ipv6_address_is_bracketed_in_its_url() -> None:
    replicas = await _discovered(Dns("fd00::7"))

    (replica,) = replicas.current
    assert replica.url == "http://[fd00::7]:8101"
    assert (replica.origin.host, replica.origin.port) == ("fd00::7", 8101)


async def test_without_discovery_the_urls_are_the_replicas_as_written(upstream: Any) -> None:
    dns = Dns("10.0.0.1")
    replicas = Replicas([SERVICE], failures=2, reset_seconds=60, resolve=dns)
    upstream.service.handler = lambda request: httpx.Response(503, content=b"{}")

    with pytest.raises(UpstreamUnavailable):
        await RecommenderClient(upstream, replicas).get("/users/u1/recommendations")

    assert [request.url.host for request in upstream.service.requests] == ["recommender-pods"]


async def test_the_system_resolver_finds_every_address_of_a_name() -> None:
    assert "127.0.0.1" in await resolve_all("localhost", 8101)


def test_a_gateway_with_discovery_serves_from_the_addresses_found(make_gateway: Any) -> None:
    gateway = make_gateway(
        recommender_urls="http://localhost:8101", recommender_discovery_seconds=30
    )

    urls = [replica.url for replica in gateway.state.reads.recommenders.replicas.current]

    assert "http://127.0.0.1:8101" in urls
    assert "http://localhost:8101" not in urls
