"""Request body limits, as pure ASGI middleware: 413 for a body over the size limit, 408 for one that stops coming.

A request whose ``Content-Length`` is over the limit is answered at once, without handing a byte of its body to
the app; a streamed (chunked) body is counted as it arrives and answered 413 as soon as it passes the limit. A
client that sends nothing for ``body_timeout_s`` before its body is complete (it declared more bytes than it
sends, or stalls) is answered 408, so it cannot hold a connection and a request slot forever. Every refusal
carries ``Connection: close``. The decoder checks the exact audio size again (and the duration) after the form is
parsed.

Why a 413 is followed by a drain (nginx's "lingering close"): most clients (httpx, requests, curl without
``Expect: 100-continue``) write the whole body before they read the answer. Closing a socket that still has
unread bytes in its receive buffer makes the kernel send a reset, which also throws away the 413 already sent but
not yet read, so the client sees ``ConnectionResetError``/``ReadError`` instead of the reason. So after the 413
is written, the rest of the body is read and discarded and only then is the response completed and the
connection closed. The drain is bounded in bytes (``DRAIN_FACTOR`` times the limit, counting what was already
read; a declared ``Content-Length`` above that is not drained at all) and in time (``body_timeout_s`` for the
whole drain), so a refused upload costs at most that much bandwidth and time. Beyond either bound the connection
is closed anyway, and a client still sending may then see a reset instead of the 413: the price of not letting a
client hold a connection with a huge or slow body. A client that sent ``Expect: 100-continue`` is not drained: it
never got the 100, so it sends no body and reads the 413 at once. A 408 is not drained either: that body stopped
coming.

Decoding starts only after the whole form, file included, has arrived (FastAPI parses it before calling the
endpoint), so a slow upload only ever occupies its own connection here, never a decode thread.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.auth import send_json

#: Multipart framing (boundaries, part headers, the small form fields) on top of the audio itself.
MULTIPART_OVERHEAD = 64 * 1024

#: How many times the limit a refused body may total before the drain gives up and closes (see the module doc).
DRAIN_FACTOR = 4


class BodyRefused(Exception):
    """Raised into the app from ``receive`` once the body is refused: over the limit, or too slow."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UploadLimitMiddleware:
    """413 for a request body over the limit (at once from Content-Length, or as soon as a streamed body passes
    it), then a bounded drain of the rest so the client can read it; 408 when the body stalls for
    ``body_timeout_s`` before it is complete."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = max_upload_bytes + MULTIPART_OVERHEAD
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s
        self.drain_limit = DRAIN_FACTOR * self.limit

    def _too_large(self) -> BodyRefused:
        return BodyRefused(
            413, f"the upload is over the limit of {self.max_upload_bytes} bytes; send a shorter recording"
        )

    def _too_slow(self, seen: int) -> BodyRefused:
        return BodyRefused(
            408,
            f"the request body stopped arriving: nothing for {self.body_timeout_s:g} s after {seen} bytes (was "
            "Content-Length more than was sent?); send the whole upload again",
        )

    async def _drain(self, receive: Receive, seen: int) -> bool:
        """Read and discard the rest of a refused body, ``seen`` bytes of it already read. True when the body
        ended within the bounds (the connection can close cleanly), False when it passed ``drain_limit`` bytes,
        took longer than ``body_timeout_s`` in all, or the client went away."""
        deadline = time.monotonic() + self.body_timeout_s
        while seen <= self.drain_limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return False
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    async def _refuse_and_drain(self, send: Send, receive: Receive, refused: BodyRefused, seen: int) -> None:
        """Write the whole refusal but hold the response open (the server completes it, then closes) while the
        rest of the body is drained; a 408 is completed at once."""
        drain = refused.status == 413
        await send_json(send, refused.status, refused.detail, [(b"connection", b"close")], more_body=drain)
        if drain:
            await self._drain(receive, seen)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            too_large = self._too_large()
            if int(length) > self.drain_limit or headers.get(b"expect", b"").lower() == b"100-continue":
                await send_json(send, 413, too_large.detail, [(b"connection", b"close")])
            else:
                await self._refuse_and_drain(send, receive, too_large, 0)
            return
        seen = 0
        complete = False
        refused: BodyRefused | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, complete, refused
            if complete:  # after the body, receive only reports a disconnect: no deadline for that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                refused = self._too_slow(seen)
                raise refused from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    refused = self._too_large()
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body is refused, whatever the app answers (FastAPI turns a failed body read into a 400)
            # is replaced by the refusal below.
            nonlocal started
            if refused is None:
                started = True
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyRefused:
            pass
        except Exception:
            if refused is None:
                raise
        if refused is not None and not started:
            if complete:  # the limit was passed by the last piece: nothing left to drain
                await send_json(send, refused.status, refused.detail, [(b"connection", b"close")])
            else:
                await self._refuse_and_drain(send, receive, refused, seen)
