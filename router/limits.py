"""Request body limits, as pure ASGI middleware: 413 for a body over the size limit, 408 for one that stops coming.

A request whose ``Content-Length`` is over the limit is answered at once, without reading a byte of its body; a
streamed (chunked) body is counted as it arrives and answered 413 as soon as it passes the limit. A client that
sends nothing for ``body_timeout_s`` before its body is complete (it declared more bytes than it sends, or
stalls) is answered 408, so it cannot hold a connection and a request slot forever. Both answers carry
``Connection: close`` so the server drops the rest instead of draining it. The decoder checks the exact audio
size again (and the duration) after the form is parsed.

Decoding starts only after the whole form, file included, has arrived (FastAPI parses it before calling the
endpoint), so a slow upload only ever occupies its own connection here, never a decode thread.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.auth import send_json

#: Multipart framing (boundaries, part headers, the small form fields) on top of the audio itself.
MULTIPART_OVERHEAD = 64 * 1024


class BodyRefused(Exception):
    """Raised into the app from ``receive`` once the body is refused: over the limit, or too slow."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UploadLimitMiddleware:
    """413 for a request body over the limit (at once from Content-Length, or as soon as a streamed body passes
    it), 408 when the body stalls for ``body_timeout_s`` before it is complete."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = max_upload_bytes + MULTIPART_OVERHEAD
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await send_json(send, 413, self._too_large().detail, [(b"connection", b"close")])
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
            await send_json(send, refused.status, refused.detail, [(b"connection", b"close")])
