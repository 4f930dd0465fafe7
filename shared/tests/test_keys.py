"""Redis key names: namespaced, and never shared by two different users or kinds."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from recsys_shared import keys

PER_USER: dict[str, Callable[[str], str]] = {
    "items": keys.user_items,
    "times": keys.user_times,
    "meta": keys.user_meta,
    "cache": keys.cache_user_prefix,
}

# Ids built from the pieces keys are made of, so that near-collisions are actually tried.
_USER_IDS = st.one_of(
    st.lists(
        st.sampled_from(["a", ":", "items", "times", "meta", "user", "cache", "rs", "0"]),
        min_size=1,
        max_size=6,
    ).map("".join),
    st.text(min_size=1, max_size=20),
)


@given(_USER_IDS, st.sampled_from(sorted(PER_USER)), _USER_IDS, st.sampled_from(sorted(PER_USER)))
def test_per_user_keys_never_collide(first: str, kind: str, second: str, other: str) -> None:
    same = PER_USER[kind](first) == PER_USER[other](second)

    assert same == ((first, kind) == (second, other))


@given(_USER_IDS)
def test_per_user_keys_start_with_the_namespace(user_id: str) -> None:
    for build in PER_USER.values():
        assert build(user_id).startswith("rs:")
    assert keys.user_items(user_id).startswith(keys.USER_PREFIX)
    assert keys.user_items(user_id).endswith(keys.USER_ITEMS_SUFFIX)
    assert keys.user_times(user_id).endswith(keys.USER_TIMES_SUFFIX)
    assert keys.user_meta(user_id).endswith(keys.USER_META_SUFFIX)


def test_every_key_constant_and_function_is_namespaced() -> None:
    constants = [
        value
        for name, value in vars(keys).items()
        if name.isupper()
        and isinstance(value, str)
        and name not in {"PREFIX", "EVENTS_GROUP"}
        and not name.endswith("_SUFFIX")
    ]
    built = [
        keys.key("x"),
        keys.dedup("e"),
        keys.item("i"),
        keys.category_items("c"),
        keys.popular_in("c"),
        keys.model(3),
        keys.task_record("t"),
        keys.task_deliveries("t"),
        keys.model_for_snapshot("1-0"),
        keys.recommendation("r"),
        keys.cache_user("u", 3, "7", "k10"),
        keys.pipeline_accepted(1714564800),
        keys.pipeline_applied(1714564800),
    ]

    assert len(constants) > 20
    for value in constants + built:
        assert value.startswith("rs:"), value


def test_key_joins_parts_under_the_prefix() -> None:
    assert keys.key("user", 42) == "rs:user:42"
    assert keys.key() == "rs"


def test_prefixes_are_what_the_builders_start_with() -> None:
    assert keys.dedup("e1") == keys.DEDUP_PREFIX + "e1"
    assert keys.dedup("e1") == keys.DEDUP_PREFIX + "e1"
    assert keys.item("i1") == keys.ITEM_PREFIX + "i1"
    assert keys.model(12) == keys.MODEL_PREFIX + "12"
    assert keys.popular_in("Drama").startswith(keys.POPULAR_CATEGORY_PREFIX)


def test_distinct_key_families_do_not_share_names() -> None:
    singletons = {
        keys.EVENTS_STREAM,
        keys.DEAD_LETTER_STREAM,
        keys.USERS,
        keys.ITEMS,
        keys.UNAVAILABLE_ITEMS,
        keys.CATALOGUE_VERSION,
        keys.POPULAR,
        keys.MODELS,
        keys.MODEL_ACTIVE,
        keys.MODEL_VERSION_SEQUENCE,
        keys.MODEL_EVENTS_CHANNEL,
        keys.TRAINING_LOCK,
        keys.SNAPSHOT_LATEST,
        keys.PIPELINE_STATS,
        keys.PIPELINE_REJECTS,
        keys.pipeline_accepted(1714564800),
        keys.pipeline_applied(1714564800),
        keys.CONSUMER_HEARTBEATS,
    }

    assert len(singletons) == 18
    assert keys.model(1) not in singletons
    assert keys.model(1) != keys.model(11)


@given(
    _USER_IDS,
    st.none() | st.integers(1, 10**6),
    st.integers(0, 10**9).map(str),
    st.sampled_from(["k10:o0:s1:c", "k5:o5:s0:cDrama"]),
)
def test_cache_keys_live_under_the_user_prefix(
    user_id: str, version: int | None, epoch: str, query: str
) -> None:
    cache_key = keys.cache_user(user_id, version, epoch, query)

    assert cache_key.startswith(keys.cache_user_prefix(user_id))
    assert cache_key.endswith(f":{epoch}:{query}")
