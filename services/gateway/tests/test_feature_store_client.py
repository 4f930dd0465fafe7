"""The gateway's client of the feature-store: an idempotent request whose connection dropped
before an answer is sent once more (a pooled connection the server closed, a restarted replica);
a request that is not idempotent is not, and a second drop is the client's 503."""

from __future__ import annotations

import httpx
import pytest

from gateway.clients import FeatureStoreClient
from recsys_shared.errors import UpstreamUnavailable
from recsys_shared.schemas import ReplayRequest

URL = "http://feature-store.test"


def _client(drops: int) -> tuple[FeatureStoreClient, list[str]]:
    """A client whose first ``drops`` requests lose their connection; the log of what was sent."""
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if len(sent) <= drops:
            raise httpx.ReadError("connection closed by the server", request=request)
        return httpx.Response(204)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return FeatureStoreClient(http, URL), sent


async def test_an_erasure_whose_connection_dropped_is_sent_again() -> None:
    client, sent = _client(drops=1)
    await client.erase_user("u1")
    assert sent == ["DELETE /users/u1", "DELETE /users/u1"]


async def test_a_second_drop_is_an_upstream_error() -> None:
    client, sent = _client(drops=2)
    with pytest.raises(UpstreamUnavailable, match="ReadError"):
        await client.erase_user("u1")
    assert len(sent) == 2


async def test_a_request_that_is_not_idempotent_is_not_sent_again() -> None:
    client, sent = _client(drops=1)
    with pytest.raises(UpstreamUnavailable):
        await client.replay_dead_letters(ReplayRequest())
    assert sent == ["POST /dead-letters/replay"]


@pytest.mark.parametrize(
    ("user_id", "path"),
    [
        (".", b"/users/%2E"),
        ("..", b"/users/%2E%2E"),
        ("a.b", b"/users/a.b"),
        ("a/b", b"/users/a%2Fb"),
    ],
)
async def test_an_id_is_one_path_segment_even_a_dot_segment(user_id: str, path: bytes) -> None:
    # Sent as '/users/..', an erasure of user '..' would reach '/' and erase nobody.
    paths: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(204)

    client = FeatureStoreClient(httpx.AsyncClient(transport=httpx.MockTransport(handle)), URL)
    await client.erase_user(user_id)
    await client.delete_item(user_id)
    assert paths == [path, path.replace(b"/users/", b"/items/")]
