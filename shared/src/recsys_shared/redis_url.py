"""Redis URLs as the settings write them, and what a client needs to connect to one.

Accepted forms (user and password optional, percent-encoded)::

    redis://[user:password@]host:port[/db][?ssl_ca_certs=/path/ca.pem]
    rediss://…                                  TLS
    redis+cluster://[user:password@]host:port[,host:port…][?ssl_ca_certs=…]
    rediss+cluster://…                          a cluster over TLS

A cluster has no database number: every node serves database 0 only. ``ssl_ca_certs`` names a
PEM file of the certificate authorities to trust (a private CA); without it the system's trust
store is used. The password never appears in ``repr`` or in :meth:`RedisTarget.redacted`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_SCHEMES = {
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}
#: ``ssl_ca_certs``: the CA bundle to trust. ``ssl_cert_reqs`` is accepted for Celery's sake
#: (its Redis backend insists on it for rediss://) and must say that certificates are checked.
_KNOWN_OPTIONS = {"ssl_ca_certs", "ssl_cert_reqs"}
_CHECKED = {"required", "cert_required"}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a Redis deployment is and how to reach it."""

    nodes: tuple[tuple[str, int], ...]
    cluster: bool = False
    tls: bool = False
    database: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: Path | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"Redis URL scheme '{parts.scheme}' is not one of {', '.join(sorted(_SCHEMES))}."
            )
        tls, cluster = _SCHEMES[parts.scheme]
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":") if credentials else ("", "", "")
        nodes = tuple(_node(text, url) for text in hosts.split(","))
        database = _database(parts.path, url)
        if cluster and database:
            raise ValueError(f"Redis URL '{redact(url)}': a cluster has no database number.")
        if not cluster and len(nodes) != 1:
            raise ValueError(
                f"Redis URL '{redact(url)}' names several hosts: use redis+cluster:// for a "
                "cluster."
            )
        options = parse_qs(parts.query)
        unknown = set(options) - _KNOWN_OPTIONS
        if unknown:
            raise ValueError(
                f"Redis URL '{redact(url)}' has unknown option(s) {sorted(unknown)}; known: "
                f"{sorted(_KNOWN_OPTIONS)}."
            )
        requirement = options.get("ssl_cert_reqs", ["required"])[0].lower()
        if requirement not in _CHECKED:
            raise ValueError(
                f"Redis URL '{redact(url)}': ssl_cert_reqs={requirement} would not check the "
                "server's certificate; only 'required' is accepted (trust a private CA with "
                "ssl_ca_certs instead)."
            )
        ca_certs = Path(options["ssl_ca_certs"][0]) if "ssl_ca_certs" in options else None
        if ca_certs is not None and not tls:
            raise ValueError(
                f"Redis URL '{redact(url)}' sets ssl_ca_certs without TLS: use rediss://."
            )
        return cls(
            nodes=nodes,
            cluster=cluster,
            tls=tls,
            database=database,
            username=unquote(username) or None,
            password=unquote(password) if credentials and ":" in credentials else None,
            ca_certs=ca_certs,
        )

    def redacted(self) -> str:
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        auth = f"{self.username or ''}:***@" if self.password is not None else ""
        return f"{scheme}://{auth}{hosts}" + (f"/{self.database}" if self.database else "")


def _node(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not host:
        host, port = text, ""
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port or 6379)
    except ValueError as error:
        raise ValueError(f"Redis URL '{redact(url)}' has a bad port in '{text}'.") from error


def _database(path: str, url: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"Redis URL '{redact(url)}': database '{text}' is not a number.")
    return int(text)


def redact(url: str) -> str:
    """The URL with any password replaced, safe to log (also for URLs that do not parse)."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}").geturl()


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")
