"""Redis key names: namespaced, never shared by two users or kinds, and on the right slot."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from recsys_shared import keys

PARTITION = keys.Partition(3)
PER_USER: dict[str, Callable[[str], str]] = {
    "items": PARTITION.user_items,
    "times": PARTITION.user_times,
    "meta": PARTITION.user_meta,
    "markers": PARTITION.markers,
    "cache": lambda user_id: keys.cached_lists(PARTITION, user_id),
    "records": keys.recommendations_of,
}

# Ids built from the pieces keys are made of, so that near-collisions are actually tried.
_USER_IDS = st.one_of(
    st.lists(
        st.sampled_from(
            ["a", ":", "items", "times", "meta", "idem", "u", "cache", "rs", "0", "{", "}", "1"]
        ),
        min_size=1,
        max_size=6,
    ).map("".join),
    st.text(min_size=1, max_size=20),
)


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}', when
    that is not empty (the cluster specification's rule)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


@given(_USER_IDS, st.sampled_from(sorted(PER_USER)), _USER_IDS, st.sampled_from(sorted(PER_USER)))
def test_per_user_keys_never_collide(first: str, kind: str, second: str, other: str) -> None:
    same = PER_USER[kind](first) == PER_USER[other](second)

    assert same == ((first, kind) == (second, other))


@given(_USER_IDS)
def test_a_users_keys_share_their_partitions_slot_whatever_the_id(user_id: str) -> None:
    partition = keys.Partitions(12).of(user_id)
    written_together = [
        *partition_user_keys(partition, user_id),
        partition.events,
        partition.users,
        partition.popular,
        partition.popular_dirty,
        partition.erased,
        partition.stats,
        partition.dead_letters,
        partition.accepted(1714564800),
        partition.drift(476_268).users,
    ]

    assert {hash_tag(key) for key in written_together} == {f"p{partition.number}"}
    assert all(key.startswith("rs:") for key in written_together)


def partition_user_keys(partition: keys.Partition, user_id: str) -> list[str]:
    return [
        partition.user_items(user_id),
        partition.user_times(user_id),
        partition.user_meta(user_id),
        partition.markers(user_id),
    ]


@given(_USER_IDS, st.integers(1, 64))
def test_a_user_always_lands_in_the_same_partition(user_id: str, count: int) -> None:
    number = keys.partition_of(user_id, count)

    assert 0 <= number < count
    assert number == zlib.crc32(user_id.encode()) % count or count == 1
    assert keys.Partitions(count).of(user_id).number == number


def test_users_spread_over_the_partitions() -> None:
    counts = [0] * 12
    for n in range(12_000):
        counts[keys.partition_of(f"user-{n}", 12)] += 1

    assert min(counts) > 800  # 1,000 each on average


def test_the_catalogue_and_the_registry_each_have_one_slot() -> None:
    catalogue = [
        keys.item("x{p1}"),
        keys.ITEMS,
        keys.UNAVAILABLE_ITEMS,
        keys.DELETED_ITEMS,
        keys.CATALOGUE_VERSION,
        keys.category_items("Science Fiction"),
        keys.POPULAR,
        keys.popular_in("Home & Garden"),
        keys.POPULAR_DIRTY,
    ]
    registry = [
        keys.MODEL_ACTIVE,
        keys.MODELS,
        keys.MODEL_VERSION_SEQUENCE,
        keys.model(7),
        keys.model_for_snapshot("1-0.g0"),
        keys.TRAINING_LOCK,  # a version's record checks it in the same script
    ]

    assert {hash_tag(key) for key in catalogue} == {"catalogue"}
    assert {hash_tag(key) for key in registry} == {"models"}
    experiments = [
        keys.EXPERIMENT_SEQUENCE,
        keys.EXPERIMENT_RUNNING,
        keys.EXPERIMENTS,
        keys.experiment("7"),
    ]
    assert {hash_tag(key) for key in experiments} == {"experiments"}


def test_every_key_constant_and_function_is_namespaced() -> None:
    constants = [
        value
        for name, value in vars(keys).items()
        if name.isupper()
        and isinstance(value, str)
        and name not in {"PREFIX", "EVENTS_GROUP", "EVENT_FIELD"}
        and name not in {"EXPERIMENT_DEFINITION", "EXPERIMENT_STATE", "CACHE_NONCE"}  # fields
        and not name.endswith(("_SUFFIX", "_FIELD"))
        and not name.startswith(
            ("DEAD_", "META_", "STAT_", "ITEM_", "MODEL_", "HIT_", "VARIANT_", "SHADOW_")
        )
    ]
    built = [
        keys.key("x"),
        keys.item("i"),
        keys.category_items("c"),
        keys.popular_in("c"),
        keys.model(3),
        keys.task_record("t"),
        keys.task_deliveries("t"),
        keys.model_for_snapshot("1-0"),
        keys.recommendation("u", "r"),
        keys.recommendation(None, "r"),
        keys.cached_lists(PARTITION, "u"),
        keys.rate_limit("k", 1714564800),
        keys.experiment("7"),
        keys.Partitions(4).of("u").experiment("7"),
        keys.Partitions(4).of("u").user_lists("u"),
    ]

    assert len(constants) > 20
    for value in constants + built:
        assert value.startswith("rs:"), value


def test_key_joins_parts_under_the_prefix() -> None:
    assert keys.key("user", 42) == "rs:user:42"
    assert keys.key() == "rs"


def test_prefixes_are_what_the_builders_start_with() -> None:
    assert keys.item("i1") == keys.ITEM_PREFIX + "i1"
    assert keys.model(12) == keys.MODEL_PREFIX + "12"
    assert keys.popular_in("Drama").startswith(keys.POPULAR_CATEGORY_PREFIX)
    assert PARTITION.user_items("u").startswith(PARTITION.user_prefix)
    assert PARTITION.user_items("u").endswith(keys.USER_ITEMS_SUFFIX)
    assert PARTITION.markers("u").endswith(keys.USER_MARKERS_SUFFIX)


@given(_USER_IDS, st.sampled_from(["-", "control", "b"]), st.sampled_from(["ab12", "cd34"]))
def test_a_users_cached_lists_share_their_partitions_slot(
    user_id: str, variant: str, digest: str
) -> None:
    partition = keys.Partitions(12).of(user_id)

    assert hash_tag(keys.cached_lists(partition, user_id)) == f"p{partition.number}"
    # A list's field can never be taken for the nonce's.
    assert keys.cache_field(variant, digest) != keys.CACHE_NONCE


def test_user_digests_are_fixed_length_and_keep_no_id() -> None:
    digest = keys.user_digest("alice@example.com")

    assert len(digest) == 32
    assert "alice" not in digest
    assert digest == keys.user_digest("alice@example.com")
    assert digest != keys.user_digest("alice@example.org")
