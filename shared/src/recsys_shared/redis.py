"""The services' Redis client: valkey-glide, on a single node or a Redis Cluster.

One :class:`RedisClient` per Redis deployment per process, created in the lifespan. glide
multiplexes every concurrent command of the process on one connection per node, routes each
command to the node that owns its key's slot on a cluster (following ``MOVED``/``ASK`` and
failovers by itself), reconnects with backoff after a dropped connection and sends the commands
that were waiting once it is back: a command fails only when its timeout passes first.

This module is the boundary: nothing else imports glide. Replies come back as Python values
with text decoded (``bytes`` → ``str``); errors come back as the contract's exceptions
(``recsys_shared.errors``), so the HTTP edge maps them once:

- :class:`~recsys_shared.errors.StoreUnavailable` (503, retry): no connection, a timeout, a
  node loading or failing over, a cluster without a master for the slot;
- :class:`~recsys_shared.errors.StoreOutOfMemory` (503, retry later): ``maxmemory`` reached
  with ``noeviction``, the writes are refused;
- :class:`~recsys_shared.errors.StoreError` (500): anything else Redis refused.

Blocking commands (``XREADGROUP … BLOCK``) hold the connection they run on, so they run on a
client of their own (:func:`connect` it once more). Celery and RedBeat keep kombu's redis-py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any, Final, cast

import glide

from recsys_shared.errors import RecsysError, StoreError, StoreOutOfMemory, StoreUnavailable
from recsys_shared.redis_url import RedisTarget

log = logging.getLogger(__name__)

Arg = str | bytes | int | float

#: Error codes that say "not now" (the node is loading, read-only after a failover, the slot
#: has no master yet…): a retry after a moment succeeds.
_UNAVAILABLE_CODES: Final = frozenset(
    {"LOADING", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "BUSY"}
)
_WRAPPED_REPLY: Final = "ResponseError: "
#: How glide words a failed (re)connection it reports as a plain request error.
_CONNECTION_FAILURES: Final = ("connect failed", "IoError", "Connection refused")
#: glide's own Rust-side log goes to stderr; its warnings duplicate the errors we raise.
glide.Logger.set_logger_config(glide.LogLevel.ERROR)


def decoded(reply: Any) -> Any:
    """A reply with its text as ``str`` (glide answers ``bytes``), containers included."""
    kind = type(reply)
    if kind is bytes:
        return reply.decode()
    # Elements are mostly bytes, decoded inline: a call for each doubled the time of a long
    # history (HGETALL of 5,000 items: 2.5 ms against 1.2, micro-benchmarked).
    if kind is list:
        return [value.decode() if type(value) is bytes else decoded(value) for value in reply]
    if kind is dict:
        return {
            (name.decode() if type(name) is bytes else decoded(name)): (
                value.decode() if type(value) is bytes else decoded(value)
            )
            for name, value in reply.items()
        }
    if kind is set:
        return {decoded(value) for value in reply}
    return reply


def error_code(error: BaseException) -> str:
    """The first word of a Redis error reply (``OOM``, ``WRONGTYPE``, a script's own code)."""
    text = str(error)
    # glide wraps some replies: "An error was signalled by the server: - ResponseError: X".
    text = text.rpartition(_WRAPPED_REPLY)[2] if _WRAPPED_REPLY in text else text
    return text.split(" ", 1)[0].rstrip(":")


def translated(error: glide.GlideError, *, timeout: float) -> RecsysError:
    """The contract's exception for a glide error."""
    if isinstance(error, glide.TimeoutError):
        return StoreUnavailable(f"Redis did not answer within {timeout:g} s.", retry_after=1)
    if isinstance(error, glide.ConnectionError | glide.ClosingError) or any(
        sign in str(error) for sign in _CONNECTION_FAILURES
    ):
        return StoreUnavailable(f"Redis is not reachable: {error}", retry_after=1)
    code = error_code(error)
    if code == "OOM":
        return StoreOutOfMemory(
            "Redis is at its memory limit and refuses writes; retry shortly.", retry_after=5
        )
    if code in _UNAVAILABLE_CODES:
        return StoreUnavailable(f"Redis is not serving right now ({code}).", retry_after=1)
    return StoreError(f"Redis refused a command: {error}", code=code)


class LuaScript:
    """A Lua source kept in a file beside the code that runs it, called by its SHA1 (glide
    loads it again by itself after a Redis restart). On a cluster every key it touches must
    share the slot of ``keys[0]``: the key families that scripts write together share a hash
    tag (see :mod:`recsys_shared.keys`)."""

    def __init__(self, source: str, *, name: str = "script") -> None:
        self.name = name
        self.source = source
        self._script = glide.Script(source)  # type: ignore[no-untyped-call]

    @classmethod
    def load(cls, package: str, filename: str) -> LuaScript:
        """The script ``filename`` from ``package``'s folder (e.g. ``__package__``)."""
        source = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        return cls(source, name=filename)

    @property
    def glide_script(self) -> glide.Script:
        return self._script


class RedisClient:
    """Commands to one Redis deployment (a node or a cluster); see the module docstring."""

    def __init__(
        self,
        client: glide.GlideClient | glide.GlideClusterClient,
        target: RedisTarget,
        *,
        timeout: float,
    ) -> None:
        self._client = client
        self.target = target
        self.timeout = timeout

    @property
    def cluster(self) -> bool:
        return self.target.cluster

    @property
    def glide(self) -> glide.GlideClient | glide.GlideClusterClient:
        """The glide client itself, for the rare typed command this class does not wrap."""
        return self._client

    async def execute(self, *args: Arg) -> Any:
        """One command; its reply decoded. On a cluster it goes to its key's node."""
        try:
            reply = await self._client.custom_command(_encoded(args))
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error
        return decoded(reply)

    async def execute_many(
        self, commands: Sequence[Sequence[Arg]], *, atomic: bool = False, decode: bool = True
    ) -> list[Any]:
        """Several commands in one round trip (per node), replies in order. ``atomic`` runs
        them as one MULTI/EXEC transaction, whose keys must then share one slot. The first
        error reply is raised once every reply is in. ``decode=False`` leaves the replies as
        Redis sent them (``DUMP``'s binary payloads)."""
        if not commands:
            return []
        batch: glide.Batch | glide.ClusterBatch = (
            glide.ClusterBatch(is_atomic=atomic) if self.cluster else glide.Batch(is_atomic=atomic)
        )
        for command in commands:
            batch.custom_command(_encoded(command))
        try:
            replies = await self._client.exec(batch, raise_on_error=True)
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error
        if replies is None:  # a transaction aborted by WATCH: never used here
            raise StoreError("A Redis transaction was aborted.")
        return [decoded(reply) for reply in replies] if decode else replies

    async def run(self, script: LuaScript, *, keys: Sequence[Arg], args: Sequence[Arg] = ()) -> Any:
        """Run ``script``; ``keys[0]`` names the slot (a keyless script would go to a random
        node of a cluster, so every script declares at least one key)."""
        if not keys:
            raise ValueError(f"Lua script {script.name} must declare at least one key.")
        try:
            reply = await self._client.invoke_script(
                script.glide_script, keys=_encoded(keys), args=_encoded(args)
            )
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error
        return decoded(reply)

    async def on_primaries(self, *args: Arg) -> list[Any]:
        """The command on every primary (the one node of a single Redis): each one's reply."""
        try:
            if isinstance(self._client, glide.GlideClusterClient):
                replies = []
                for host, port in await self._primary_addresses():
                    route = glide.ByAddressRoute(host, port)
                    replies.append(
                        decoded(await self._client.custom_command(_encoded(args), route))
                    )
                return replies
            return [decoded(await self._client.custom_command(_encoded(args)))]
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error

    async def _primary_addresses(self) -> list[tuple[str, int]]:
        """Where the cluster's masters are now, from ``CLUSTER NODES``."""
        listing = decoded(await self._client.custom_command(["CLUSTER", "NODES"]))
        addresses = []
        for line in str(listing).splitlines():
            fields = line.split()
            if len(fields) > 2 and "master" in fields[2].split(",") and "fail" not in fields[2]:
                host, _, port = fields[1].split("@")[0].rpartition(":")
                addresses.append((host, int(port)))
        return addresses

    async def on_node_of(self, key: Arg, *args: Arg) -> Any:
        """The command on the primary that owns ``key``'s slot (``WAIT``, ``INFO``)."""
        try:
            if isinstance(self._client, glide.GlideClusterClient):
                route = glide.SlotKeyRoute(glide.SlotType.PRIMARY, _text(key))
                return decoded(await self._client.custom_command(_encoded(args), route))
            return decoded(await self._client.custom_command(_encoded(args)))
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error

    async def scan(self, match: str, *, count: int = 1000) -> AsyncIterator[str]:
        """Every key matching the glob ``match``, on every primary (a key may come twice)."""
        try:
            if isinstance(self._client, glide.GlideClusterClient):
                cursor: Any = glide.ClusterScanCursor()  # type: ignore[no-untyped-call]
                while not cursor.is_finished():
                    reply: list[Any] = await self._client.scan(cursor, match=match, count=count)
                    cursor, found = reply
                    for name in cast(list[bytes], found):
                        yield decoded(name)
                return
            position: Any = "0"
            while True:
                page: list[Any] = await self._client.scan(position, match=match, count=count)
                position, found = page
                for name in cast(list[bytes], found):
                    yield decoded(name)
                if position in (b"0", "0"):
                    return
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error

    async def wait_for_replicas(self, key: Arg, replicas: int, timeout_ms: int) -> int:
        """Block until ``replicas`` replicas of ``key``'s primary have every write this
        connection sent before, or ``timeout_ms`` passes; how many have it."""
        return int(await self.on_node_of(key, "WAIT", replicas, timeout_ms))

    async def next_message(self) -> str:
        """The next message on the channels this client subscribed to at :func:`connect`."""
        try:
            message = await self._client.get_pubsub_message()
        except glide.GlideError as error:
            raise translated(error, timeout=self.timeout) from error
        return str(decoded(message.message))

    async def ping(self) -> bool:
        return bool(await self.execute("PING") == "PONG")

    async def aclose(self) -> None:
        with contextlib.suppress(glide.GlideError):
            await self._client.close()


def _text(value: Arg) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encoded(args: Sequence[Arg]) -> list[str | bytes]:
    """glide takes text or bytes only; numbers as Redis reads them (``repr`` keeps a float's
    every digit)."""
    return [
        arg if isinstance(arg, str | bytes) else repr(arg) if isinstance(arg, float) else str(arg)
        for arg in args
    ]


async def connect(
    url: str,
    *,
    command_timeout: float = 2.0,
    name: str = "recsys",
    channels: Sequence[str] = (),
) -> RedisClient:
    """A client for the Redis at ``url`` (see :mod:`recsys_shared.redis_url`); every command
    fails after ``command_timeout`` seconds. It connects on first use, so a service starts
    while Redis is down and reports it in ``/readyz``. ``channels``: pub/sub channels this
    client subscribes to (read with :meth:`RedisClient.next_message`)."""
    target = RedisTarget.from_url(url)
    config = _configuration(target, command_timeout, name, channels)
    client: glide.GlideClient | glide.GlideClusterClient
    if isinstance(config, glide.GlideClusterClientConfiguration):
        client = await glide.GlideClusterClient.create(config)
    else:
        client = await glide.GlideClient.create(config)
    redis_client = RedisClient(client, target, timeout=command_timeout)
    if channels:
        # A lazy client subscribes once connected: connect now if Redis answers.
        with contextlib.suppress(RecsysError):
            await redis_client.ping()
    return redis_client


def _configuration(
    target: RedisTarget, timeout: float, name: str, channels: Sequence[str]
) -> glide.GlideClientConfiguration | glide.GlideClusterClientConfiguration:
    milliseconds = int(timeout * 1000)
    tls = (
        glide.TlsAdvancedConfiguration(root_pem_cacerts=target.ca_certs.read_bytes())
        if target.ca_certs is not None
        else None
    )
    common: dict[str, Any] = {
        "addresses": [glide.NodeAddress(host, port) for host, port in target.nodes],
        "use_tls": target.tls,
        "credentials": (
            glide.ServerCredentials(target.password, target.username)
            if target.password is not None
            else None
        ),
        "request_timeout": milliseconds,
        # Reconnects forever; the delay grows to 50 ms · 2^6 ≈ 3 s between attempts.
        "reconnect_strategy": glide.BackoffStrategy(num_of_retries=6, factor=50, exponent_base=2),
        "client_name": name,
        "lazy_connect": True,
        # Commands waiting per connection before glide refuses more (its default is 1000).
        "inflight_requests_limit": 20_000,
    }
    # The two topologies take the same options from twin classes; only a single node has a
    # database number.
    kind: type[glide.GlideClusterClientConfiguration] | type[glide.GlideClientConfiguration]
    if target.cluster:
        kind = glide.GlideClusterClientConfiguration
        advanced = glide.AdvancedGlideClusterClientConfiguration
    else:
        kind = glide.GlideClientConfiguration
        advanced = glide.AdvancedGlideClientConfiguration
        common["database_id"] = target.database or None
    common["advanced_config"] = advanced(connection_timeout=milliseconds, tls_config=tls)
    if channels:
        common["pubsub_subscriptions"] = kind.PubSubSubscriptions(
            channels_and_patterns={kind.PubSubChannelModes.Exact: set(channels)},
            callback=None,
            context=None,
        )
    return kind(**common)
