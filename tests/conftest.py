"""A whole system per test module, shared by the cross-service suites (integration, browser):
real Redis (one node, or a 3-master cluster with a broker beside it), services and a Celery
worker, and one model trained on two taste clusters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recsys_shared.testing import (
    DataTier,
    Stack,
    build_stack,
    cluster_tier,
    single_tier,
    start_all,
    taste_clusters,
    train,
)


@pytest.fixture(scope="module", params=["single"])
def tier(request: pytest.FixtureRequest) -> DataTier:
    """The data tier of the module's system: a single Redis unless the module asks for both
    (``EVERY_TIER`` in its ``pytestmark``)."""
    if request.param == "cluster":
        data = cluster_tier(
            request.getfixturevalue("redis_cluster"), request.getfixturevalue("broker_server")
        )
    else:
        data = single_tier(request.getfixturevalue("redis_server"))
    data.flush()
    return data


@pytest.fixture(scope="module")
def stack_settings() -> dict[str, str]:
    """Settings the module's system starts with beyond the stack's own: a module that needs
    others (a faster schedule, another Redis) overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def stack(
    tier: DataTier, stack_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    system = build_stack(tier, tmp_path_factory.mktemp("stack"), **stack_settings)
    try:
        yield start_all(system)
    finally:
        system.close()


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, object]:
    """Load two taste clusters through the API and train one model on them."""
    return train(stack.gateway, *taste_clusters())
