"""Redis URLs: single nodes, clusters, TLS with a private CA; passwords never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_shared.redis_url import RedisTarget, is_cluster_url, redact
from recsys_shared.tasks import celery_url


def test_a_single_node_with_database_and_credentials() -> None:
    target = RedisTarget.from_url("redis://app:s3cret@cache.internal:6380/2")

    assert target.nodes == (("cache.internal", 6380),)
    assert (target.cluster, target.tls, target.database) == (False, False, 2)
    assert (target.username, target.password) == ("app", "s3cret")
    assert "s3cret" not in repr(target)
    assert target.redacted() == "redis://app:***@cache.internal:6380/2"


def test_defaults_and_a_password_without_a_user() -> None:
    target = RedisTarget.from_url("redis://:pw@localhost")

    assert target.nodes == (("localhost", 6379),)
    assert (target.username, target.password, target.database) == (None, "pw", 0)


def test_a_cluster_names_its_seed_nodes_and_may_use_tls_with_a_private_ca() -> None:
    target = RedisTarget.from_url(
        "rediss+cluster://default:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
        "?ssl_ca_certs=/etc/recsys/ca.pem"
    )

    assert target.cluster
    assert target.tls
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert target.ca_certs == Path("/etc/recsys/ca.pem")
    assert is_cluster_url("redis+cluster://a:1")
    assert not is_cluster_url("redis://a:1/0")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://cache:6379", "scheme"),
        ("redis+cluster://a:7000/3", "no database number"),
        ("redis://a:1,b:2/0", "several hosts"),
        ("redis://a:port/0", "bad port"),
        ("redis://a:1/zero", "not a number"),
        ("redis://a:1/0?ssl_ca_certs=/ca.pem", "without TLS"),
        ("redis://a:1/0?socket_timeout=3", "unknown option"),
        ("rediss://a:1/0?ssl_cert_reqs=none", "would not check"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        RedisTarget.from_url(url)


def test_redact_hides_passwords_even_in_urls_it_cannot_parse() -> None:
    assert redact("redis+cluster://u:pw@a:1,b:2") == "redis+cluster://u:***@a:1,b:2"
    assert redact("redis://a:1/0") == "redis://a:1/0"


def test_celery_gets_the_certificate_requirement_it_insists_on() -> None:
    assert celery_url("redis://broker:6379/0") == "redis://broker:6379/0"
    assert (
        celery_url("rediss://broker:6380/0?ssl_ca_certs=/ca.pem")
        == "rediss://broker:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    )
    kept = "rediss://broker:6380/0?ssl_cert_reqs=required"
    assert celery_url(kept) == kept
