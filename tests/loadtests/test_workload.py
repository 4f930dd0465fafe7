"""What the visitors draw from (the shipped MovieLens ids, the page mixes) and what Locust
finds in the locustfile (one visitor class, the one shape ``LOADTEST_SHAPE`` picks)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import locust.stats
import pytest
import shapes
from journeys import WEIGHTS, RecsysVisitor, check_list
from locust.util.load_locustfile import load_locustfile
from population import MOVIES, USERS, WORKLOADS, movielens_page, site_page
from resilience import ResilienceShape

from conftest import LOADTESTS


def test_the_shipped_id_files_cover_the_movielens_demo() -> None:
    assert len(USERS) == 671
    assert {row["user_id"] for row in USERS} == {str(user) for user in range(1, 672)}
    assert sum(int(row["ratings"]) for row in USERS) == 100_004
    assert len(MOVIES) == 1000
    assert all(row["title"] and row["item_id"].isdigit() for row in MOVIES)
    assert all(row["categories"] for row in MOVIES)


def test_the_movielens_mix_pages_at_random_and_the_site_mix_does_not() -> None:
    random.seed(7)
    pages = [movielens_page() for _ in range(5000)]

    assert {page["k"] for page in pages} == set(range(5, 45))
    assert min(page["offset"] for page in pages) == 0
    assert max(page["offset"] for page in pages) == 200
    assert {tuple(site_page()) for _ in range(100)} == {("k",)}
    assert set(WORKLOADS) == {"site", "movielens"}


def test_every_action_is_weighted_and_a_list_is_checked() -> None:
    assert all(weight > 0 for weight in WEIGHTS.values())
    assert Counter(RecsysVisitor.tasks) == WEIGHTS  # Locust expands the table into its list
    good = {"strategy": "popular", "items": [{"item_id": "1"}], "recommendation_id": "r"}
    assert check_list(good) is None
    assert check_list({**good, "strategy": "random"}) == "unknown strategy 'random'"
    assert check_list({**good, "items": [{}]}) == "items is not a list of items"
    assert check_list({**good, "recommendation_id": ""}) == "no recommendation_id"


@pytest.fixture
def abstract_shapes() -> Iterator[None]:
    """Loading the locustfile marks one shape concrete; put them back as they were."""
    classes = (shapes.SteadyShape, shapes.RampShape, shapes.SpikeShape, ResilienceShape)
    yield
    for shape in classes:
        shape.abstract = True


@pytest.mark.usefixtures("abstract_shapes")
def test_locust_finds_the_visitor_and_the_one_shape_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(locust.stats, "PERCENTILES_TO_CHART", locust.stats.PERCENTILES_TO_CHART)
    monkeypatch.setattr(locust.stats, "HISTORY_STATS_INTERVAL_SEC", 5)
    monkeypatch.setenv("LOADTEST_SHAPE", "resilience")

    users, found = load_locustfile(str(LOADTESTS / "locustfile.py"))

    assert list(users) == ["RecsysVisitor"]
    assert [type(shape) for shape in found] == [ResilienceShape]
    assert 0.99 in locust.stats.PERCENTILES_TO_CHART  # the verdict times the spike by it
