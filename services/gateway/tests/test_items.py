"""The catalogue routes against a fake feature-store (MockTransport) that writes Redis the way
the real one does; reads come from Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.schemas import Item
from recsys_shared.testing import assert_problem, ok_body

PROBLEM = "application/problem+json"
WRITTEN_AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


def _m1(**fields: Any) -> Item:
    """Item m1 as stored at WRITTEN_AT (the time the fake feature-store and catalogue stamp)."""
    return Item(item_id="m1", updated_at=WRITTEN_AT, **fields)


def _fields(body: dict[str, Any]) -> dict[str, str]:
    """An item's hash fields for what a write gives (PUT: everything, PATCH: some)."""
    fields = {keys.ITEM_UPDATED_AT: WRITTEN_AT.isoformat()}
    if "title" in body:
        fields[keys.ITEM_TITLE] = body["title"]
    if "categories" in body:
        fields[keys.ITEM_CATEGORIES] = json.dumps(body["categories"])
    if "available" in body:
        fields[keys.ITEM_AVAILABLE] = "1" if body["available"] else "0"
    return fields


def _feature_store(store: redis.Redis) -> Any:
    """Stores items as the feature-store does: one hash per item."""

    def handler(request: httpx.Request) -> httpx.Response:
        prefix = "/items/"
        if request.method == "PUT" and request.url.path.startswith(prefix):
            item_id = request.url.path.removeprefix(prefix)
            body = json.loads(request.content)
            store.hset(keys.item(item_id), mapping=_fields(body))
            return httpx.Response(200, json={"stored": 1})
        if request.method == "PATCH" and request.url.path.startswith(prefix):
            item = keys.item(request.url.path.removeprefix(prefix))
            if not store.exists(item):
                return httpx.Response(404, json={"detail": "Item is not in the catalogue."})
            store.hset(item, mapping=_fields(json.loads(request.content)))
            return httpx.Response(200, json={"stored": 1})
        if request.method == "PUT" and request.url.path == "/items":
            return httpx.Response(200, json={"stored": len(json.loads(request.content)["items"])})
        if request.method == "DELETE" and request.url.path.startswith(prefix):
            existed = store.delete(keys.item(request.url.path.removeprefix(prefix)))
            if existed:
                return httpx.Response(204)
            return httpx.Response(404, json={"detail": "Item is not in the catalogue."})
        return httpx.Response(405)

    return handler


@pytest.fixture
def items_gateway(gateway: Any, store: redis.Redis) -> Any:
    gateway.feature_store.handler = _feature_store(store)
    return gateway


def test_put_item_forwards_to_the_feature_store_and_returns_the_stored_item(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    sent = {"title": "Toy Story (1995)", "categories": ["Animation", "Comedy"], "available": False}

    response = items_gateway.client.put("/v1/items/m1", json=sent, headers=client_headers)

    assert Item.model_validate(ok_body(response)) == _m1(
        title="Toy Story (1995)", categories=["Animation", "Comedy"], available=False
    )
    [request] = items_gateway.feature_store.requests
    assert request.method == "PUT"
    assert request.url.host == "feature-store"
    assert request.url.path == "/items/m1"
    assert json.loads(request.content) == sent
    assert request.headers["x-request-id"] == response.headers["x-request-id"]


def test_put_item_fills_defaults_before_forwarding(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    response = items_gateway.client.put(
        "/v1/items/m2", json={"title": "Heat"}, headers=client_headers
    )

    assert response.status_code == 200
    assert response.json()["available"] is True
    [request] = items_gateway.feature_store.requests
    assert json.loads(request.content) == {"title": "Heat", "categories": [], "available": True}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "ok", "unexpected": 1},
        {"title": "ok", "categories": [" padded"]},
        {"title": "ok", "categories": ["x" * 65]},
        {"title": "bad\ncontrol"},
        {"title": "ok", "available": "maybe"},
    ],
)
def test_invalid_items_never_reach_the_feature_store(
    items_gateway: Any, client_headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = items_gateway.client.put("/v1/items/m1", json=body, headers=client_headers)

    assert_problem(response, 422)
    assert items_gateway.feature_store.requests == []


def test_get_item_reads_redis(gateway: Any, catalogue: Any, client_headers: dict[str, str]) -> None:
    catalogue.item("m1", title="Heat (1995)", categories=["Crime"], updated_at=WRITTEN_AT)

    response = gateway.client.get("/v1/items/m1", headers=client_headers)

    assert Item.model_validate(ok_body(response)) == _m1(
        title="Heat (1995)", categories=["Crime"], available=True
    )
    assert gateway.feature_store.requests == []


def test_get_unknown_item_is_a_404(gateway: Any, client_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/items/ghost", headers=client_headers)

    assert_problem(response, 404, "unknown-item")


def test_bulk_put_forwards_the_batch(items_gateway: Any, client_headers: dict[str, str]) -> None:
    items = [{"item_id": f"m{index}", "title": f"Movie {index}"} for index in range(3)]

    response = items_gateway.client.put("/v1/items", json={"items": items}, headers=client_headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 3}
    [request] = items_gateway.feature_store.requests
    assert request.url.path == "/items"
    forwarded = json.loads(request.content)["items"]
    assert [item["item_id"] for item in forwarded] == ["m0", "m1", "m2"]


def test_an_item_listed_twice_in_a_batch_is_stored_once_as_its_last_entry_says(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    items = [
        {"item_id": "m1", "title": "First"},
        {"item_id": "m2", "title": "Other"},
        {"item_id": "m1", "title": "Last", "available": False},
    ]

    response = items_gateway.client.put("/v1/items", json={"items": items}, headers=client_headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2}
    [request] = items_gateway.feature_store.requests
    forwarded = json.loads(request.content)["items"]
    assert [(item["item_id"], item["title"]) for item in forwarded] == [
        ("m1", "Last"),
        ("m2", "Other"),
    ]
    assert forwarded[0]["available"] is False


def test_delete_item(items_gateway: Any, catalogue: Any, client_headers: dict[str, str]) -> None:
    catalogue.item("m1")

    deleted = items_gateway.client.delete("/v1/items/m1", headers=client_headers)
    again = items_gateway.client.delete("/v1/items/m1", headers=client_headers)

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(again, 404, "unknown-item")
    assert [request.url.path for request in items_gateway.feature_store.requests] == [
        "/items/m1",
        "/items/m1",
    ]


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def _timed_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=request)


def _failing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, text="Internal Server Error")


@pytest.mark.parametrize("handler", [_refused, _timed_out, _failing])
def test_feature_store_down_is_a_503(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str], handler: Any
) -> None:
    gateway.feature_store.handler = handler
    writes = [
        ("PUT", "/v1/items/m1", {"title": "Heat"}),
        ("PUT", "/v1/items", {"items": [{"item_id": "m1", "title": "Heat"}]}),
        ("PATCH", "/v1/items/m1", {"available": False}),
        ("DELETE", "/v1/items/m1", None),
    ]

    for method, path, body in writes:
        response = gateway.client.request(method, path, json=body, headers=client_headers)

        where = f"{method} {path}: {response.text}"
        assert response.status_code == 503, where
        assert response.headers["content-type"] == PROBLEM, where
        assert response.headers["retry-after"] == "1", where
        assert response.json()["type"] == "urn:recsys:problem:upstream-unavailable", where
    assert not store.exists(keys.item("m1"))
    # Writes are not retried by the gateway: one attempt each.
    assert len(gateway.feature_store.requests) == len(writes)


def test_a_refusal_of_the_feature_store_is_a_422(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(
        400, json={"detail": "title is too long for the store"}
    )

    response = gateway.client.put("/v1/items/m1", json={"title": "x"}, headers=client_headers)

    assert_problem(response, 422)
    assert response.json()["detail"] == "title is too long for the store"


def test_an_item_gone_right_after_its_write_is_a_404(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    # The feature-store acknowledges, but the item is not in Redis (deleted in between).
    gateway.feature_store.handler = lambda request: httpx.Response(200, json={})

    response = gateway.client.put("/v1/items/m1", json={"title": "x"}, headers=client_headers)

    assert_problem(response, 404)
    assert len(gateway.feature_store.requests) == 1


def test_categories_are_text_as_real_catalogues_name_them(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    sent = {"title": "Alien", "categories": ["Science Fiction", "(no genres listed)"]}

    response = items_gateway.client.put("/v1/items/m1", json=sent, headers=client_headers)

    assert response.status_code == 200, response.text
    assert response.json()["categories"] == sent["categories"]


# ── PATCH: some fields ───────────────────────────────────────────────────────────────────
def test_patch_changes_only_the_fields_given(
    items_gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.item("m1", title="Heat (1995)", categories=["Crime"])

    response = items_gateway.client.patch(
        "/v1/items/m1", json={"available": False}, headers=client_headers
    )

    assert Item.model_validate(ok_body(response)) == _m1(
        title="Heat (1995)", categories=["Crime"], available=False
    )
    [request] = items_gateway.feature_store.requests
    assert (request.method, request.url.path) == ("PATCH", "/items/m1")
    # Only what the client gave travels: no defaults that would overwrite other fields.
    assert json.loads(request.content) == {"available": False}
    assert request.headers["x-request-id"] == response.headers["x-request-id"]

    renamed = items_gateway.client.patch(
        "/v1/items/m1", json={"title": "Heat", "categories": ["Drama"]}, headers=client_headers
    )
    assert renamed.json()["title"] == "Heat"
    assert renamed.json()["categories"] == ["Drama"]
    assert renamed.json()["available"] is False


def test_patching_an_unknown_item_is_a_404(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    response = items_gateway.client.patch(
        "/v1/items/ghost", json={"title": "Boo"}, headers=client_headers
    )

    assert_problem(response, 404, "unknown-item")
    assert len(items_gateway.feature_store.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"available": None},
        {"title": None, "categories": None},
        {"title": ""},
        {"available": "maybe"},
        {"categories": [" padded"]},
        {"available": False, "unexpected": 1},
        [],
    ],
)
def test_an_empty_or_invalid_patch_never_reaches_the_feature_store(
    items_gateway: Any, catalogue: Any, client_headers: dict[str, str], body: Any
) -> None:
    catalogue.item("m1")

    response = items_gateway.client.patch("/v1/items/m1", json=body, headers=client_headers)

    assert_problem(response, 422)
    assert items_gateway.feature_store.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"available": "maybe"}, "available"),
        ({"title": 5}, "title"),
        ({"categories": "Drama"}, "categories"),
    ],
)
def test_a_wrong_type_in_a_patch_is_one_error_naming_its_field(
    items_gateway: Any, catalogue: Any, client_headers: dict[str, str], body: Any, field: str
) -> None:
    catalogue.item("m1")

    response = items_gateway.client.patch("/v1/items/m1", json=body, headers=client_headers)

    errors = assert_problem(response, 422, "invalid-input")["errors"]
    assert [error["field"] for error in errors] == [field]


def test_an_item_gone_right_after_its_patch_is_a_404(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(200, json={"stored": 1})

    response = gateway.client.patch(
        "/v1/items/m1", json={"available": False}, headers=client_headers
    )

    assert response.status_code == 404
    assert response.json()["type"] == "urn:recsys:problem:unknown-item"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_the_popular_lists_path_takes_no_item_write(
    items_gateway: Any, client_headers: dict[str, str], method: str
) -> None:
    # /v1/items/popular is the popular list: an item stored there could never be read back.
    response = items_gateway.client.request(
        method, "/v1/items/popular", json={"title": "A film called Popular"}, headers=client_headers
    )

    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    assert items_gateway.feature_store.requests == []


def test_popular_is_refused_as_an_item_id_in_a_bulk_import(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    batch = {"items": [{"item_id": "m1", "title": "One"}, {"item_id": "popular", "title": "P"}]}

    response = items_gateway.client.put("/v1/items", json=batch, headers=client_headers)

    [error] = assert_problem(response, 422)["errors"]
    assert error["field"] == "items[1].item_id"
    assert "'popular' is reserved" in error["message"]
    assert items_gateway.feature_store.requests == []


def test_an_item_whose_id_starts_with_popular_is_an_item(
    items_gateway: Any, client_headers: dict[str, str]
) -> None:
    response = items_gateway.client.put(
        "/v1/items/popularity", json={"title": "Popularity"}, headers=client_headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["item_id"] == "popularity"
