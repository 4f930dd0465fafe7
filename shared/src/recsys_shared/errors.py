"""The one exception tree of the system.

Domain code raises these; each service maps them to HTTP exactly once (``recsys_shared.web``),
as RFC 9457 problem details. Nothing here knows about HTTP frameworks, only the status each
error deserves::

    RecsysError                       500  (never raised directly)
    ├── InvalidInput                  422  one or more fields or events are wrong
    ├── PayloadTooLarge               413
    ├── RequestTimeout                408  the client did not send its request's body in time
    ├── NotFound                      404
    │   ├── UnknownItem
    │   ├── UnknownModelVersion
    │   ├── UnknownTask
    │   └── UnknownExperiment
    ├── Conflict                      409  e.g. activating a version that cannot be activated
    ├── AuthenticationRequired        401
    ├── PermissionDenied              403
    ├── StoreError                    500  Redis refused a command; retrying will not help
    └── RetryableError                     carries retry_after
        ├── RateLimited               429
        └── Unavailable               503  safe to retry
            ├── StoreUnavailable           Redis did not answer in time, or is not serving
            │   └── StoreOutOfMemory       Redis is at maxmemory and refuses writes
            ├── Backpressure               ingestion is too far ahead of the consumers
            ├── UpstreamUnavailable        another service did not answer in time
            └── ModelUnavailable           a version cannot be loaded (artifact, memory)
"""

from __future__ import annotations

from typing import ClassVar

from recsys_shared.schemas.problems import FieldError


class RecsysError(Exception):
    """Base of every error the services raise on purpose.

    A kind declares its HTTP status, title and slug in its class line
    (``class Gone(RecsysError, status=410, title="Gone", slug="gone")``); one it leaves out is
    inherited, so an ``UnknownItem`` is a 404 because a ``NotFound`` is.
    """

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"

    def __init_subclass__(
        cls, *, status: int | None = None, title: str | None = None, slug: str | None = None
    ) -> None:
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if title is not None:
            cls.title = title
        if slug is not None:
            cls.slug = slug

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @property
    def type_uri(self) -> str:
        # A URN names the problem kind without pretending to be a page someone can open.
        return f"urn:recsys:problem:{self.slug}"


class InvalidInput(RecsysError, status=422, title="Invalid input", slug="invalid-input"):
    """One or more fields or events are wrong; ``errors`` lists them."""


class PayloadTooLarge(RecsysError, status=413, title="Payload too large", slug="payload-too-large"):
    """A request body over the service's size limit."""


class RequestTimeout(RecsysError, status=408, title="Request timeout", slug="request-timeout"):
    """The client had not sent its request's whole body when the request's time ran out."""


class NotFound(RecsysError, status=404, title="Not found", slug="not-found"):
    """The thing a request names does not exist."""


class UnknownItem(NotFound, title="Unknown item", slug="unknown-item"):
    """No item has this id in the catalogue."""


class UnknownModelVersion(NotFound, title="Unknown model version", slug="unknown-model-version"):
    """The registry holds no model version by this number."""


class UnknownTask(NotFound, title="Unknown task", slug="unknown-task"):
    """No task record has this id (never enqueued, or expired)."""


class UnknownExperiment(NotFound, title="Unknown experiment", slug="unknown-experiment"):
    """No experiment has this id."""


class Conflict(RecsysError, status=409, title="Conflict", slug="conflict"):
    """The request contradicts the current state, e.g. activating a version that cannot be
    activated."""


class AuthenticationRequired(
    RecsysError, status=401, title="Authentication required", slug="authentication-required"
):
    """No API key or session, or one that is not known."""


class PermissionDenied(
    RecsysError, status=403, title="Permission denied", slug="permission-denied"
):
    """The caller is known but its role may not do this."""


class RetryableError(RecsysError):
    """An error the client may retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimited(RetryableError, status=429, title="Too many requests", slug="rate-limited"):
    """The caller's key has used its requests for this second."""


class Unavailable(RetryableError, status=503, title="Service unavailable", slug="unavailable"):
    """Not served right now; the same request may succeed after ``retry_after``."""


class StoreUnavailable(Unavailable, title="Store unavailable", slug="store-unavailable"):
    """Redis did not answer in time, or is not serving."""


class StoreOutOfMemory(StoreUnavailable, title="Store full", slug="store-full"):
    """Redis is at maxmemory and refuses writes."""


class StoreError(RecsysError, title="Store error", slug="store-error"):
    """Redis answered a command with an error that a retry will not fix (a wrong type, a
    script's own error): a bug or a broken deployment, logged and answered as a 500."""

    def __init__(self, detail: str, *, code: str = "") -> None:
        super().__init__(detail)
        self.code = code


class Backpressure(Unavailable, title="Ingestion backlog too large", slug="backpressure"):
    """Ingestion is too far ahead of the consumers."""


class UpstreamUnavailable(
    Unavailable, title="Upstream service unavailable", slug="upstream-unavailable"
):
    """Another service did not answer in time."""


class ModelUnavailable(Unavailable, title="Model version unavailable", slug="model-unavailable"):
    """A model version cannot be served here: its artifact is missing or broken, or it does
    not fit the replica's memory bound."""
