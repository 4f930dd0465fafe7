"""What a benchmark asks of the system: whose lists, which ``k`` and pages, with which API keys.

One :class:`Workload` drives both load generators: wrk (as a Lua script, closed loop) and the
open-loop client of the latency runs (:meth:`Workload.draw`), so both send the same mix.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from recsys_shared.testing import CLIENT_KEY

#: Uncached requests ask for a random page (offset 0..this) of a random user's list: 5,000
#: users x 201 pages, so a run of ~50,000 requests repeats about 2.5% of its cache keys (with
#: offsets up to 50 it was 10% at today's throughput: hits that flattered the uncached path).
MAX_PAGE_OFFSET = 200
API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Workload:
    """Random users, a random ``k`` in ``k_range`` and a random offset in 0..``max_offset``,
    each request with a random one of ``api_keys``; ``hot`` are the paths of the cached runs
    (warmed first, then asked again and again)."""

    name: str
    users: Sequence[str]
    k_range: tuple[int, int]
    api_keys: Sequence[str]
    hot: Sequence[str]
    max_offset: int = MAX_PAGE_OFFSET

    def draw(self, generator: random.Random) -> tuple[str, str]:
        """One uncached request: its path and its API key."""
        user = generator.choice(self.users)
        k, offset = generator.randint(*self.k_range), generator.randint(0, self.max_offset)
        return f"/v1/users/{user}/recommendations?k={k}&offset={offset}", generator.choice(
            self.api_keys
        )

    def uncached_lua(self) -> str:
        """wrk requests drawn as :meth:`draw` does: nearly every one a different cache key."""
        low, high = self.k_range
        return self._lua(
            f"local users = {_lua_list(self.users)}",
            f'"/v1/users/" .. users[math.random(1, #users)] .. "/recommendations?k=" .. '
            f'math.random({low}, {high}) .. "&offset=" .. math.random(0, {self.max_offset})',
        )

    def cached_lua(self) -> str:
        """wrk requests for the hot paths only: once warmed, every one a cache hit."""
        return self._lua(f"local paths = {_lua_list(self.hot)}", "paths[math.random(1, #paths)]")

    def _lua(self, table: str, path: str) -> str:
        return f"""
{table}
local keys = {_lua_list(self.api_keys)}
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  return wrk.format("GET", {path}, {{["{API_KEY_HEADER}"] = keys[math.random(1, #keys)]}})
end
"""


def _lua_list(values: Sequence[str]) -> str:
    # A JSON string is a valid Lua string literal for the plain ids and paths used here.
    return "{" + ",".join(json.dumps(value) for value in values) + "}"


def synthetic(users: Sequence[str]) -> Workload:
    """The synthetic figures: k=10 for every request, one API key (its rate limit off), the
    first 200 users' first pages as the cached set."""
    hot = [f"/v1/users/{user}/recommendations?k=10" for user in users[:200]]
    return Workload("synthetic", users, (10, 10), [CLIENT_KEY], hot)


def movielens(users: Sequence[str], api_keys: Sequence[str], *, hot: int = 2000) -> Workload:
    """The MovieLens demo's mix: a real user, ``k`` from 5 to 44, a page from 0 to 200 and one
    of many client keys; the cached set is ``hot`` such requests drawn once (fixed seed)."""
    workload = Workload("movielens", users, (5, 44), api_keys, [])
    generator = random.Random(11)
    paths = sorted({workload.draw(generator)[0] for _ in range(hot)})
    return Workload("movielens", users, (5, 44), api_keys, paths)
