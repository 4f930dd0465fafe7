"""Request bodies sent compressed (``Content-Encoding: gzip``), decoded as they are read.

A client sending batches of events saves most of its bandwidth by compressing them (a
1,000-event batch of MovieLens ratings: 138 KB of JSON, 10 KB of gzip; inflating it takes
~0.16 ms, 3% of validating it). Without this, a gzip body would reach the JSON parser as it
came and be refused as "not JSON", and any other coding likewise, with a reason that names
the wrong thing. Here:

- no ``Content-Encoding``, or ``identity``: the body passes untouched;
- ``gzip`` (or its old name ``x-gzip``; several gzip members one after another are one body,
  as RFC 1952 says): decoded while the route reads it. Decoded, it may be no larger than the
  body limit (``MAX_BODY_BYTES``) either, and is refused with a 413 as soon as it grows past
  it, so a small body that would inflate to gigabytes is never held in memory. The wire size
  is counted by :class:`~recsys_shared.web.limits.BodySizeLimitMiddleware`, outside this one.
  A body that is not valid gzip, or ends before its gzip stream does, is a 400 saying so;
- any other coding (``br``, ``deflate``, ``gzip, gzip``...): a 415 naming it, with
  ``Accept-Encoding: gzip`` (RFC 9110 §15.5.16).

The checks run when a route reads its body, so a route that takes none (a GET) never answers
them, and the answers are ``HTTPException`` s, which both FastAPI and the fast lane pass to
the shared problem handler (FastAPI turns any other error raised while it reads a body into
its own 400).
"""

from __future__ import annotations

import zlib

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: zlib's window bits for a gzip stream (header and trailer checked).
_GZIP_WINDOW = 16 + zlib.MAX_WBITS
_GZIP_NAMES = frozenset({"gzip", "x-gzip"})
_IDENTITY = "identity"


class ContentDecodingMiddleware:
    """Decodes gzip request bodies within ``max_bytes``; refuses other content codings."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        codings = _content_codings(scope) if scope["type"] == "http" else []
        if not codings:
            await self.app(scope, receive, send)
            return
        if len(codings) == 1 and codings[0] in _GZIP_NAMES:
            _mark_decoded(scope)
            await self.app(scope, _GzipBody(receive, self.max_bytes).receive, send)
            return
        await self.app(scope, _refusing(", ".join(codings), receive), send)


def _content_codings(scope: Scope) -> list[str]:
    """The request's content codings, in the order applied, without ``identity``."""
    codings = []
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            for coding in value.decode("latin-1").split(","):
                coding = coding.strip().lower()
                if coding and coding != _IDENTITY:
                    codings.append(coding)
    return codings


def _mark_decoded(scope: Scope) -> None:
    """Tell the route its body is no longer encoded, and of a length not known ahead. In
    place, not on a copy: the router records the matched route in this very scope, where the
    metrics read it once the request is answered."""
    dropped = (b"content-encoding", b"content-length")
    scope["headers"] = [(name, value) for name, value in scope["headers"] if name not in dropped]


def _refusing(codings: str, receive: Receive) -> Receive:
    async def refuse() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            raise HTTPException(
                415,
                f"The body is sent with Content-Encoding {codings!r}; only gzip (or none) is "
                "accepted.",
                headers={"Accept-Encoding": "gzip"},
            )
        return message

    return refuse


class _GzipBody:
    """A receive channel that inflates the gzip body of the one below it, chunk by chunk."""

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self._receive = receive
        self._max_bytes = max_bytes
        self._inflater = zlib.decompressobj(_GZIP_WINDOW)
        self._inflated = 0
        self._mid_stream = False  # bytes of a gzip member were read and its end was not

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        body = self._inflate(message.get("body", b""))
        if not message.get("more_body", False) and self._mid_stream:
            raise HTTPException(400, "The gzip body ends before its gzip stream does.")
        return {**message, "body": body}

    def _inflate(self, data: bytes) -> bytes:
        parts = []
        while data:
            self._mid_stream = True
            room = self._max_bytes - self._inflated + 1  # one byte past the limit tells
            try:
                part = self._inflater.decompress(data, room)
            except zlib.error as error:
                raise HTTPException(400, f"The body is not valid gzip data ({error}).") from None
            self._inflated += len(part)
            if self._inflated > self._max_bytes:
                raise HTTPException(
                    413,
                    f"The request body is larger than the limit of {self._max_bytes} bytes "
                    "once decompressed.",
                )
            parts.append(part)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:  # a member ended; what follows it is the next one's
                self._mid_stream = False
                data = self._inflater.unused_data
                self._inflater = zlib.decompressobj(_GZIP_WINDOW)
        return b"".join(parts)
