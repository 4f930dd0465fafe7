"""Who the simulated visitors are and what they ask for: MovieLens ids, weights and page sizes.

The ids come from ``data/`` (written by ``make_data.py`` from the demo's own MovieLens set), so
the load reproduces the demo's skew: a few users with thousands of ratings are asked for far
more often than the many with a few dozen, and movies are drawn by their number of ratings.

Two workloads page through lists differently (``--workload``, ``WORKLOAD`` in ``make loadtest``):

- ``site``: what a web page asks for, ``k=10`` (``k=20`` one time in four), first page only;
- ``movielens``: the real-workload mix of ``make bench``, ``k`` from 5 to 44 and ``offset``
  from 0 to 200 at random, so nearly every list is a different cache key.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

DATA = Path(__file__).resolve().parent / "data"

T = TypeVar("T")


class WeightedChoice(Generic[T]):
    """Draws from ``values`` with probabilities proportional to ``weights`` (O(log n))."""

    def __init__(self, values: Sequence[T], weights: Sequence[float]) -> None:
        if not values or len(values) != len(weights):
            raise ValueError("WeightedChoice needs as many weights as values, and at least one")
        self.values = list(values)
        self.cumulative = list(itertools.accumulate(weights))

    def __call__(self) -> T:
        return random.choices(self.values, cum_weights=self.cumulative)[0]


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def genres(movie: dict[str, str]) -> list[str]:
    """A movie's categories, as the catalogue holds them."""
    return [genre for genre in movie["categories"].split("|") if genre]


USERS = _rows("user_weights.csv")
MOVIES = _rows("movies.csv")

#: A MovieLens user, drawn with the demo's own activity distribution.
KNOWN_USER = WeightedChoice([row["user_id"] for row in USERS], [int(r["ratings"]) for r in USERS])
#: A movie row (``item_id``, ``title``, ``categories``), drawn by its number of ratings.
MOVIE = WeightedChoice(MOVIES, [int(row["ratings"]) for row in MOVIES])
_GENRES = Counter(genre for movie in MOVIES for genre in genres(movie)).most_common(12)
#: One of the 12 commonest genres, weighted by how many of the top movies carry it.
CATEGORY = WeightedChoice([genre for genre, _ in _GENRES], [count for _, count in _GENRES])
#: MovieLens' own rating scale; users mostly rate what they liked.
RATING = WeightedChoice([1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0], [2, 5, 4, 16, 12, 25, 9, 17])


def site_page() -> dict[str, int]:
    """The first page of a list, the length a web page shows."""
    return {"k": random.choice((10, 10, 10, 20))}


def movielens_page() -> dict[str, int]:
    """A random page of a random length: the real-workload mix (see the module docstring)."""
    return {"k": random.randint(5, 44), "offset": random.randint(0, 200)}


#: The query parameters of one list request, by workload.
WORKLOADS: dict[str, Callable[[], dict[str, int]]] = {
    "site": site_page,
    "movielens": movielens_page,
}
