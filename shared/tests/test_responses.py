"""The hand-written list JSON is the Recommendations model's JSON, on any input."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_shared.features import ItemDetails
from recsys_shared.responses import render
from recsys_shared.schemas import Recommendations, ScoredItem, Strategy

texts = st.text(max_size=40)
categories = st.lists(st.text(min_size=1, max_size=12), max_size=4)
scores = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
entries = st.tuples(
    st.text(min_size=1, max_size=20), scores, st.none() | st.tuples(texts, categories)
)


def _details(found: tuple[str, list[str]] | None) -> ItemDetails | None:
    if found is None:
        return None
    title, listed = found
    # As the feature-store stores them: sorted, unique, json.dumps.
    return ItemDetails(title, json.dumps(sorted(set(listed))))


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(entries, max_size=12),
    strategy=st.sampled_from(Strategy),
    reason=st.none() | texts,
    version=st.none() | st.integers(min_value=0, max_value=2**40),
    user_id=st.none() | texts,
    item_id=st.none() | texts,
)
def test_render_writes_the_models_json(
    items: list[Any],
    strategy: Strategy,
    reason: str | None,
    version: int | None,
    user_id: str | None,
    item_id: str | None,
) -> None:
    rendered = render(
        [(item, score, _details(found)) for item, score, found in items],
        strategy=strategy,
        reason=reason,
        version=version,
        user_id=user_id,
        item_id=item_id,
        recommendation_id="0" * 32,
    )
    expected = Recommendations(
        user_id=user_id,
        item_id=item_id,
        items=[
            ScoredItem(
                item_id=item,
                score=round(score, 6),
                title=found[0] if found else None,
                categories=sorted(set(found[1])) if found else None,
            )
            for item, score, found in items
        ],
        model_version=version,
        strategy=strategy,
        fallback_reason=reason,
        recommendation_id="0" * 32,
    )

    assert Recommendations.model_validate_json(rendered) == expected
    # The same fields in the same order (the cache swaps the last two of a stored body).
    assert list(json.loads(rendered)) == list(json.loads(expected.model_dump_json()))
    assert rendered.endswith('"cached":false,"cache_age_seconds":null}')
