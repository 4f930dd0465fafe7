"""The one exception tree of the system.

Domain code raises these; each service maps them to HTTP exactly once (``recsys_shared.web``),
as RFC 9457 problem details. Nothing here knows about HTTP frameworks, only the status each
error deserves::

    RecsysError                       500  (never raised directly)
    ├── InvalidInput                  422  one or more fields or events are wrong
    ├── PayloadTooLarge               413
    ├── NotFound                      404
    │   ├── UnknownItem
    │   ├── UnknownModelVersion
    │   ├── UnknownTask
    │   └── UnknownExperiment
    ├── Conflict                      409  e.g. activating a version that cannot be activated
    ├── AuthenticationRequired        401
    ├── PermissionDenied              403
    ├── RateLimited                   429  carries retry_after
    ├── StoreError                    500  Redis refused a command; retrying will not help
    └── Unavailable                   503  carries retry_after; safe to retry
        ├── StoreUnavailable               Redis did not answer in time, or is not serving
        │   └── StoreOutOfMemory           Redis is at maxmemory and refuses writes
        ├── Backpressure                   ingestion is too far ahead of the consumers
        ├── UpstreamUnavailable            another service did not answer in time
        └── ModelUnavailable               a version cannot be loaded (artifact, memory)
"""

from __future__ import annotations

from typing import Any, ClassVar


class RecsysError(Exception):
    """Base of every error the services raise on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @property
    def type_uri(self) -> str:
        # A URN names the problem kind without pretending to be a page someone can open.
        return f"urn:recsys:problem:{self.slug}"


class InvalidInput(RecsysError):
    status = 422
    title = "Invalid input"
    slug = "invalid-input"


class PayloadTooLarge(RecsysError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class NotFound(RecsysError):
    status = 404
    title = "Not found"
    slug = "not-found"


class UnknownItem(NotFound):
    title = "Unknown item"
    slug = "unknown-item"


class UnknownModelVersion(NotFound):
    title = "Unknown model version"
    slug = "unknown-model-version"


class UnknownTask(NotFound):
    title = "Unknown task"
    slug = "unknown-task"


class UnknownExperiment(NotFound):
    title = "Unknown experiment"
    slug = "unknown-experiment"


class Conflict(RecsysError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class AuthenticationRequired(RecsysError):
    status = 401
    title = "Authentication required"
    slug = "authentication-required"


class PermissionDenied(RecsysError):
    status = 403
    title = "Permission denied"
    slug = "permission-denied"


class RetryableError(RecsysError):
    """An error the client may retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    status = 429
    title = "Too many requests"
    slug = "rate-limited"


class Unavailable(RetryableError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class StoreUnavailable(Unavailable):
    title = "Store unavailable"
    slug = "store-unavailable"


class StoreOutOfMemory(StoreUnavailable):
    title = "Store full"
    slug = "store-full"


class StoreError(RecsysError):
    """Redis answered a command with an error that a retry will not fix (a wrong type, a
    script's own error): a bug or a broken deployment, logged and answered as a 500."""

    title = "Store error"
    slug = "store-error"

    def __init__(self, detail: str, *, code: str = "") -> None:
        super().__init__(detail)
        self.code = code


class Backpressure(Unavailable):
    title = "Ingestion backlog too large"
    slug = "backpressure"


class UpstreamUnavailable(Unavailable):
    title = "Upstream service unavailable"
    slug = "upstream-unavailable"


class ModelUnavailable(Unavailable):
    """A model version cannot be served here: its artifact is missing or broken, or it does
    not fit the replica's memory bound."""

    title = "Model version unavailable"
    slug = "model-unavailable"
