"""``make evaluate``: recommendation quality on a time-ordered replay of MovieLens.

The protocol (issue 17): for each MovieLens user, the oldest 80% of their ratings (by
timestamp, ties by movie id) go into an empty system through ``POST /v1/events`` as ``rating``
events with their original timestamps; one retrain; then ``GET
/v1/users/{id}/recommendations?k=10`` for every user with at least one later rating >= 4 on a
movie not in their 80%. Precision@10 is hits / 10 averaged over those users. The baseline ranks
movies by their number of ratings in the 80%, leaving out each user's seen movies.

Two parts, with fixed seeds:

- **offline**: the same split, every recipe (its default parameters) and popularity, fitted and
  ranked in this process by the worker's own code; and the hybrid's heaviest users (more than
  ``--recent`` items, default 500) scored from their whole history, as the recommender does,
  against only their most recent items;
- **replay**: a system started here (real processes, a Redis of its own), fed through the
  public API, retrained once (the first training searches recipes), then asked for every
  user's list through the gateway; then a refit is triggered and timed until every
  recommender serves it (trigger -> served).

``--offline`` runs only the first part; ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import batches, catalogue, movielens, rating_events, send

from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.schemas import EventType, Recipe, event_weight
from recsys_shared.testing import (
    admin_headers,
    build_stack,
    client_headers,
    interrupt_on_sigterm,
    wait_for_applied,
    wait_for_task,
)

if TYPE_CHECKING:
    from retraining_worker.data import Interactions

K = 10
TRAIN_SHARE = 0.8
LIKED = 4.0
SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker")


@dataclass(frozen=True)
class ReplaySplit:
    """The 80% each user sent (frame rows), and what each evaluated user liked later."""

    sent: Any  # a pandas frame: the rows that go in
    targets: dict[str, set[str]]  # user id -> movie ids rated >= 4 later, unseen


def replay_split(frame: Any) -> ReplaySplit:
    ordered = frame.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    position = ordered.groupby("userId").cumcount()
    size = ordered.groupby("userId")["movieId"].transform("size")
    early = position < (size * TRAIN_SHARE).astype(int)
    sent, later = ordered[early], ordered[~early]
    seen: dict[str, set[str]] = {}
    for user, movie in zip(sent.userId, sent.movieId, strict=True):
        seen.setdefault(str(user), set()).add(str(movie))
    targets: dict[str, set[str]] = {}
    for user, movie, rating in zip(later.userId, later.movieId, later.rating, strict=True):
        if rating >= LIKED and str(movie) not in seen.get(str(user), set()):
            targets.setdefault(str(user), set()).add(str(movie))
    return ReplaySplit(sent, targets)


def list_metrics(
    lists: dict[str, list[str]], targets: dict[str, set[str]], n_items: int
) -> dict[str, float]:
    """precision, recall and NDCG at K, and coverage, over the users with targets."""
    precision = recall = ndcg = 0.0
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    listed: set[str] = set()
    for user, wanted in targets.items():
        ranked = lists.get(user, [])[:K]
        listed.update(ranked)
        hits = np.array([item in wanted for item in ranked], dtype=bool)
        precision += hits.sum() / K
        recall += hits.sum() / len(wanted)
        ndcg += float(discounts[: len(hits)][hits].sum() / discounts[: min(len(wanted), K)].sum())
    users = len(targets)
    return {
        "precision_at_10": precision / users,
        "recall_at_10": recall / users,
        "ndcg_at_10": ndcg / users,
        "coverage": len(listed) / n_items,
        "users": float(users),
    }


# ── offline ─────────────────────────────────────────────────────────────────────────────────
def offline(
    split: ReplaySplit, movies: list[dict[str, Any]], recent: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every recipe's default and popularity on the replay split, in this process; and the
    hybrid's lists of the users with more than ``recent`` items, scored from all of them and
    from their ``recent`` most recent (empty if no user has that many)."""
    from scipy.sparse import csr_matrix

    from retraining_worker.data import Interactions
    from retraining_worker.evaluation import top_k_excluding
    from retraining_worker.recipes import DEFAULTS, TrainingSet, fit
    from retraining_worker.recipes.content import Catalogue, content_features, content_neighbours
    from retraining_worker.recipes.weighting import training_matrix

    sent = split.sent
    user_ids = np.array(sorted({str(user) for user in sent.userId}), dtype=np.str_)
    item_ids = np.array([movie["item_id"] for movie in movies], dtype=np.str_)
    user_row = {user: row for row, user in enumerate(user_ids.tolist())}
    item_row = {item: row for row, item in enumerate(item_ids.tolist())}
    data = Interactions(
        user_ids,
        item_ids,
        np.array([user_row[str(user)] for user in sent.userId], dtype=np.int32),
        np.array([item_row[str(movie)] for movie in sent.movieId], dtype=np.int32),
        np.array(
            [event_weight(EventType.RATING, float(value)) for value in sent.rating],
            dtype=np.float32,
        ),
        sent.timestamp.to_numpy(dtype=np.float64),
    )
    described = Catalogue(
        item_ids,
        np.array([movie["title"] for movie in movies], dtype=np.str_),
        [movie["categories"] for movie in movies],
    )
    content = content_neighbours(content_features(item_ids, described), 100)
    users = [user for user in split.targets if user in user_row]
    rows = np.array([user_row[user] for user in users], dtype=np.int64)
    history = data.matrix(signed=True)[rows]
    seen = csr_matrix((np.ones(len(data)), (data.rows, data.cols)), shape=data.shape)[rows]

    def lists_of(scores: np.ndarray, picked: np.ndarray | None = None) -> dict[str, list[str]]:
        """Each user's top K (``picked``: the users' positions ``scores`` is for; default all)."""
        picked = np.arange(len(users)) if picked is None else picked
        ranked = top_k_excluding(scores.astype(np.float32), seen[picked], K)
        return {
            users[position]: [str(item_ids[i]) for i in row if i >= 0]
            for position, row in zip(picked, ranked, strict=True)
        }

    counts = np.bincount(data.cols, minlength=data.shape[1]).astype(np.float32)
    table = {
        "popularity": list_metrics(
            lists_of(np.tile(counts, (len(rows), 1))), split.targets, len(item_ids)
        )
    }
    heavy_users: dict[str, dict[str, float]] = {}
    recipes: dict[str, Recipe] = {str(name): recipe for name, recipe in DEFAULTS.items()}
    for name, recipe in recipes.items():
        started = time.perf_counter()
        model = fit(recipe, TrainingSet(training_matrix(data, recipe), content, 2, 42))
        scores = np.concatenate(
            [model.score(history[start : start + 256]) for start in range(0, len(rows), 256)]
        )
        table[name] = {
            **list_metrics(lists_of(scores), split.targets, len(item_ids)),
            "fit_seconds": time.perf_counter() - started,
        }
        history_sizes = np.bincount(data.rows, minlength=data.shape[0])[rows]
        heavy = np.flatnonzero(history_sizes > recent)
        if name == "hybrid" and len(heavy):
            # Why the recommender scores a user's whole history: scoring the heaviest users
            # from only their most recent items (every item still excluded) would bound their
            # CPU, at this cost in their lists' quality (docs/quality.md).
            latest = data.matrix(most_recent(data, recent), signed=True)[rows[heavy]]
            targets = {users[position]: split.targets[users[position]] for position in heavy}
            for label, scored in (
                ("whole history", history[heavy]),
                (f"{recent} most recent", latest),
            ):
                heavy_users[label] = list_metrics(
                    lists_of(model.score(scored), heavy), targets, len(item_ids)
                )
    return table, heavy_users


def most_recent(data: Interactions, limit: int) -> np.ndarray:
    """Which interactions are among their user's ``limit`` most recent (MovieLens has one
    rating per user and movie, so these are the user's most recent items)."""
    order = np.lexsort((-data.times, data.rows))  # by user, newest first
    by_user = data.rows[order]
    rank = np.arange(len(order)) - np.searchsorted(by_user, by_user)
    kept = np.zeros(len(data), dtype=bool)
    kept[order[rank < limit]] = True
    return kept


# ── replay through the public API ───────────────────────────────────────────────────────────
def _served_everywhere(stack: Any, version: int) -> Callable[[], bool]:
    def check() -> bool:
        for name in ("recommender1", "recommender2"):
            body = httpx.get(f"{stack.url(name)}/model", timeout=5).json()
            if body["serving_version"] != version:
                return False
        return True

    return check


def replay(split: ReplaySplit, movies: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    server = RedisServer(workdir / "redis").start()
    # A generous rate limit: the replay is one client sending everything at once. The search
    # gets the demo's budget (the test stack's is a few trials), so the figures are make run's.
    stack = build_stack(
        server,
        workdir,
        RATE_LIMIT_PER_SECOND="100000",
        RATE_LIMIT_BURST="100000",
        TRAINING_BUDGET_SECONDS=os.environ.get("TRAINING_BUDGET_SECONDS", "120"),
        SEARCH_MAX_TRIALS=os.environ.get("SEARCH_MAX_TRIALS", "0"),
    )
    try:
        for name in SERVICES:
            stack.start(name, wait=False)
        for name in SERVICES:
            stack.processes[name].wait_healthy(timeout=120)
        return _replay_on(stack, split, movies)
    finally:
        stack.close()
        server.stop()


def _replay_on(stack: Any, split: ReplaySplit, movies: list[dict[str, Any]]) -> dict[str, Any]:
    gateway = stack.gateway
    figures: dict[str, Any] = {}
    with httpx.Client(base_url=gateway, timeout=120) as http:
        for batch in batches(movies):
            send(http, "PUT", "/v1/items", {"items": batch}, client_headers())
        events = rating_events(split.sent, prefix="replay")
        for batch in batches(events):
            send(http, "POST", "/v1/events", {"events": batch}, client_headers())
        wait_for_applied(gateway, timeout=600)
        print(f"replay: {len(movies)} movies and {len(events)} ratings sent", flush=True)
        started = time.perf_counter()
        task = send(http, "POST", "/v1/models/retrain", {}, admin_headers()).json()["task_id"]
        result = wait_for_task(gateway, task, timeout=900)
        figures["first_training_seconds"] = time.perf_counter() - started
        outcome = result.get("result") or {}
        if not isinstance(outcome, dict) or outcome.get("status") != "published":
            raise SystemExit(f"the first training did not publish: {result}")
        version = int(outcome["version"])
        wait_until(_served_everywhere(stack, version), timeout=120, interval=0.2, what="the model")
        figures["search_seconds"] = outcome.get("search_seconds")
        figures["winner"] = outcome.get("recipe")
        lists: dict[str, list[str]] = {}
        strategies: dict[str, int] = {}
        for user in split.targets:
            body = http.get(
                f"/v1/users/{user}/recommendations", params={"k": K}, headers=client_headers()
            ).json()
            lists[user] = [item["item_id"] for item in body["items"]]
            strategies[body["strategy"]] = strategies.get(body["strategy"], 0) + 1
        figures["metrics"] = list_metrics(lists, split.targets, len(movies))
        figures["strategies"] = strategies
        info = http.get("/v1/models/active", headers=admin_headers()).json()
        figures["candidates"] = [
            {"recipe": c["recipe"], "precision_at_10": c["metrics"].get("precision_at_10")}
            for c in (info.get("selection") or {}).get("candidates", [])
        ]
        figures["refit"] = _timed_refit(http, stack)
    return figures


def _timed_refit(http: httpx.Client, stack: Any) -> dict[str, Any]:
    """Trigger -> served by every recommender, for a refit of the winner on new data."""
    fresh = [
        {"user_id": "refit-probe", "item_id": str(movie), "type": "like"} for movie in (1, 2, 3)
    ]
    send(http, "POST", "/v1/events", {"events": fresh}, client_headers())
    wait_for_applied(stack.gateway, timeout=60)
    started = time.perf_counter()
    task = send(http, "POST", "/v1/models/retrain", {}, admin_headers()).json()["task_id"]
    result = wait_for_task(stack.gateway, task, timeout=300)
    outcome = result.get("result") or {}
    if not isinstance(outcome, dict) or outcome.get("status") != "published":
        raise SystemExit(f"the refit did not publish: {result}")
    wait_until(
        _served_everywhere(stack, int(outcome["version"])),
        timeout=120,
        interval=0.05,
        what="the refit",
    )
    return {
        "selection": outcome.get("selection"),
        "trigger_to_served_seconds": time.perf_counter() - started,
    }


# ── report ──────────────────────────────────────────────────────────────────────────────────
def table(rows: dict[str, dict[str, float]], baseline: str = "popularity") -> str:
    base = rows[baseline]["precision_at_10"]
    lines = [
        f"| recipe | precision@10 | × {baseline} | recall@10 | NDCG@10 | coverage |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in rows.items():
        ratio = values["precision_at_10"] / base if base else math.inf
        lines.append(
            f"| {name} | {values['precision_at_10']:.4f} | {ratio:.2f}× | "
            f"{values['recall_at_10']:.4f} | {values['ndcg_at_10']:.4f} | "
            f"{values['coverage']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="only the offline table")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--recent",
        type=int,
        default=500,
        help="offline, the hybrid's users with more items are also scored from this many of "
        "their most recent items (the recommender scores the whole history: this is why)",
    )
    arguments = parser.parse_args()
    frame = movielens()
    movies = catalogue(frame)
    split = replay_split(frame)
    print(
        f"MovieLens: {len(split.sent)} ratings sent, {len(split.targets)} users evaluated",
        flush=True,
    )
    rows, heavy_users = offline(split, movies, arguments.recent)
    print(
        "\nOffline, the replay split (each recipe's default parameters):\n" + table(rows),
        flush=True,
    )
    if heavy_users:
        print(
            f"\nThe hybrid's users with more than {arguments.recent} items "
            f"({heavy_users['whole history']['users']:.0f} evaluated), scored from:\n"
            + table(heavy_users, baseline="whole history"),
            flush=True,
        )
    figures: dict[str, Any] = {"offline": rows, "most_recent_only": heavy_users}
    if not arguments.offline:
        with tempfile.TemporaryDirectory(prefix="recsys-evaluate-") as workdir:
            replayed = replay(split, movies, Path(workdir))
        figures["replay"] = replayed
        measured = replayed["metrics"]
        base = rows["popularity"]["precision_at_10"]
        print(
            "\nReplay through the public API:\n"
            + table({"popularity": rows["popularity"], "replay (served)": measured})
        )
        print(f"\nwinner: {replayed['winner']}")
        print(f"strategies served: {replayed['strategies']}")
        print(
            f"search: {replayed['search_seconds']:.1f}s; "
            f"first training: {replayed['first_training_seconds']:.1f}s"
        )
        refit = replayed["refit"]
        print(
            f"refit ({refit['selection']}): trigger -> served by every recommender "
            f"{refit['trigger_to_served_seconds']:.1f}s"
        )
        ratio = measured["precision_at_10"] / base
        print(f"replay precision@10 = {ratio:.2f}x popularity (target >= 1.8x)")
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(figures, indent=2, default=str))
    if (
        not arguments.offline
        and figures["replay"]["metrics"]["precision_at_10"]
        < 1.8 * rows["popularity"]["precision_at_10"]
    ):
        sys.exit(1)


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
