"""Tools for experiments on a running system: a deliberately worse version, and a simulated
population whose hidden tastes decide what it clicks (used by the experiment tests and
``make experiment-demo``), and a simulation of keen users for the statistics."""

from __future__ import annotations

import asyncio
import io
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from recsys_shared import keys
from recsys_shared.artifacts import IDS_FILE, ArtifactStore, load_npz, model_folder, npz_bytes
from recsys_shared.experiments.statistics import Sample, versus_control
from recsys_shared.redis import connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelStatus
from recsys_shared.testing.api import admin_headers, client_headers
from recsys_shared.testing.records import model_info


async def _scrambled(
    redis_url: str, artifact_url: str, source: int, status: ModelStatus, seed: int
) -> int:
    client = await connect(redis_url)
    try:
        registry = ModelRegistry(client)
        store = ArtifactStore(artifact_url)
        info = await registry.get(source)
        assert info.artifact_url is not None
        _, files = await asyncio.to_thread(
            store.read_bundle, info.artifact_url.removeprefix(store.base_url + "/")
        )
        ids = load_npz(files[IDS_FILE])
        # Every row keeps its scores but answers to another item's name: the version ranks
        # as confidently as before, and is wrong (a worse model of the same shape).
        ids["item_ids"] = np.random.default_rng(seed).permutation(ids["item_ids"])
        files[IDS_FILE] = npz_bytes(**ids)
        version = await registry.next_version()
        await asyncio.to_thread(
            store.write_bundle, model_folder(version), files, {"version": version}
        )
        scrambled = info.model_copy(
            update={
                "version": version,
                "status": status,
                "status_reason": "scrambled copy (a test's worse version)",
                "artifact_url": store.url(model_folder(version)),
                # The model file is the source's: the same checksum (the manifest has the
                # new ids file's).
                "snapshot_id": f"{info.snapshot_id}-scrambled-{version}",
                "activated_at": None,
                "replaced_by": None,
                "experiment_notes": [],
            }
        )
        await registry.record(scrambled)
        return version
    finally:
        await client.aclose()


def scrambled_version(
    redis_url: str,
    artifact_url: str,
    source: int,
    *,
    status: ModelStatus = ModelStatus.REJECTED,
    seed: int = 1,
) -> int:
    """Register a worse copy of version ``source`` (its items' names shuffled) as a new
    version with a verified artifact; returns its number."""
    return asyncio.run(_scrambled(redis_url, artifact_url, source, status, seed))


@dataclass
class Tally:
    """What a population did, per variant, as the experiment should count it."""

    exposures: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    clicks: dict[str, int] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)
    versions: dict[str, set[int | None]] = field(default_factory=dict)

    def add(self, counter: dict[str, int], variant: str) -> None:
        counter[variant] = counter.get(variant, 0) + 1


@dataclass
class Population:
    """Users whose hidden taste is the cluster their id starts with (``a12`` likes ``A*``
    items, see ``taste_clusters``): a user clicks the top of a list when it is to their
    taste (``p_like``), seldom otherwise (``p_other``), and buys a share of what they
    click."""

    users: list[str]
    p_like: float = 0.6
    p_other: float = 0.05
    p_purchase: float = 0.2
    seed: int = 11
    tally: Tally = field(default_factory=Tally)
    _random: random.Random = field(init=False)
    _sent: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def likes(self, user: str, item: str) -> bool:
        return item[:1].lower() == user[:1].lower()

    def visit(self, http: httpx.Client, user: str) -> dict[str, Any]:
        """The user asks for their list and maybe clicks its top item (sent as an event with
        the list's id, twice: a retried request must count once)."""
        response = http.get(f"/v1/users/{user}/recommendations", headers=client_headers())
        response.raise_for_status()
        served: dict[str, Any] = response.json()
        variant = served.get("variant")
        if variant is None or not served["items"]:
            return served
        tally = self.tally
        tally.add(tally.exposures, variant)
        tally.versions.setdefault(variant, set()).add(served["model_version"])
        top = served["items"][0]["item_id"]
        chance = self.p_like if self.likes(user, top) else self.p_other
        if self._random.random() < chance:
            kind = "purchase" if self._random.random() < self.p_purchase else "click"
            self._sent += 1
            event = {
                "event_id": f"sim-{self.seed}-{self._sent}",
                "user_id": user,
                "item_id": top,
                "type": kind,
                "recommendation_id": served["recommendation_id"],
            }
            for _ in range(2):  # a client retry: the same event_id, counted once
                sent = http.post("/v1/events", json={"events": [event]}, headers=client_headers())
                assert sent.status_code == 202, sent.text
            tally.add(tally.events, variant)
            tally.add(tally.clicks, variant)
            if kind == "purchase":
                tally.add(tally.conversions, variant)
        return served


def experiment(http: httpx.Client, experiment_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/experiments/{experiment_id}", headers=admin_headers())
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Settled:
    """An experiment's report and its counters beside what the population did, per variant
    (exposures, events, clicks, conversions)."""

    report: dict[str, Any]
    counted: dict[str, tuple[int, int, int, int]]
    expected: dict[str, tuple[int, int, int, int]]

    @property
    def exact(self) -> bool:
        return self.counted == self.expected


def settle(
    http: httpx.Client, population: Population, experiment_id: str, *, within: float = 10.0
) -> Settled:
    """The experiment's report once its counters equal what ``population`` did, or as it
    stands after ``within`` seconds. Call it once every event is applied: exposures are
    written at the end of an event-loop turn, a moment after the list was served."""
    tally = population.tally
    deadline = time.monotonic() + within
    while True:
        report = experiment(http, experiment_id)
        counted = {
            variant["name"]: (
                variant["exposures"],
                variant["events"],
                variant["clicks"],
                variant["conversions"],
            )
            for variant in report["variants"]
        }
        expected = {
            name: (
                tally.exposures.get(name, 0),
                tally.events.get(name, 0),
                tally.clicks.get(name, 0),
                tally.conversions.get(name, 0),
            )
            for name in counted
        }
        settled = Settled(report, counted, expected)
        if settled.exact or time.monotonic() > deadline:
            return settled
        time.sleep(0.2)


async def _small_versions(redis_url: str, artifact_url: str, count: int) -> list[int]:
    from implicit.cpu.als import AlternatingLeastSquares  # a test tool: the services have it
    from scipy.sparse import random as sparse_random

    from recsys_shared.artifacts import MODEL_FILE

    client = await connect(redis_url)
    store = ArtifactStore(artifact_url)
    registry = ModelRegistry(client)
    versions = []
    try:
        for seed in range(count):
            interactions = sparse_random(50, 40, density=0.2, format="csr", random_state=seed)
            model = AlternatingLeastSquares(factors=4, iterations=3, random_state=seed)
            model.fit(interactions.astype(np.float32), show_progress=False)
            buffer = io.BytesIO()
            model.save(buffer)
            version = await registry.next_version()
            ids = npz_bytes(
                user_ids=np.array([f"u{n}" for n in range(50)]),
                item_ids=np.array([f"i{n}" for n in range(40)]),
            )
            files = {MODEL_FILE: buffer.getvalue(), IDS_FILE: ids}
            store.write_bundle(model_folder(version), files, {"version": version})
            await registry.record(
                model_info(
                    version,
                    snapshot_id=f"small-{version}",
                    artifact_url=store.url(model_folder(version)),
                )
            )
            versions.append(version)
        await registry.activate(versions[0], "a test's first version")
        return versions
    finally:
        await client.aclose()


def small_versions(redis_url: str, artifact_url: str, count: int = 2) -> list[int]:
    """Register ``count`` small, real ALS versions (50 users ``u*``, 40 items ``i*``) and
    activate the first: a system with versions to experiment on, in a second."""
    return asyncio.run(_small_versions(redis_url, artifact_url, count))


def keen_users_verdict(rng: np.random.Generator, *rates: float, grouped: bool = True) -> str:
    """A simulated two-variant experiment of users who each see many lists (1 + geometric,
    mean 11) and click with a rate of their own (beta-distributed about the variant's),
    counted per group as the system counts them (or as independent lists, ``grouped=False``),
    checked after every 100 of 3,000 users: the first verdict."""
    users, groups = 3_000, keys.VARIANT_GROUPS
    arms = rng.integers(len(rates), size=users)
    means = np.asarray(rates)[arms]
    lists = 1 + rng.geometric(0.1, size=users)
    clicks = rng.binomial(lists, rng.beta(means * 5, (1 - means) * 5))
    cells = arms * groups + rng.integers(groups, size=users)
    for end in range(100, users + 1, 100):
        served = np.bincount(cells[:end], weights=lists[:end], minlength=2 * groups).astype(int)
        clicked = np.bincount(cells[:end], weights=clicks[:end], minlength=2 * groups).astype(int)
        control, treatment = (
            Sample.grouped(clicked[part].tolist(), served[part].tolist())
            if grouped
            else Sample.of(int(clicked[part].sum()), int(served[part].sum()))
            for part in (slice(0, groups), slice(groups, None))
        )
        found = versus_control([(control, treatment)], treatments=1, tau=0.05, alpha=0.05)
        if found is not None and found.verdict != "undecided":
            return found.verdict
    return "undecided"
