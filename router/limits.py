"""The upload size limit, as pure ASGI middleware: 413 before the body is read whole.

A request whose ``Content-Length`` is over the limit is answered at once, without reading a byte of its body; a
streamed (chunked) body is counted as it arrives and answered 413 as soon as it passes the limit. The response
carries ``Connection: close`` so the server drops the rest instead of draining it. The decoder checks the exact
audio size again (and the duration) after the form is parsed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.auth import send_json

#: Multipart framing (boundaries, part headers, the small form fields) on top of the audio itself.
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """413 for a request body over the limit: at once from Content-Length, or as soon as a streamed (chunked)
    body passes it, before the rest is read."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = max_upload_bytes + MULTIPART_OVERHEAD
        self.max_upload_bytes = max_upload_bytes

    def _detail(self) -> str:
        return f"the upload is over the limit of {self.max_upload_bytes} bytes; send a shorter recording"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await send_json(send, 413, self._detail(), [(b"connection", b"close")])
            return
        seen = 0
        over = False

        async def limited_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Once the body went over the limit, whatever the app answers (FastAPI turns a failed body read
            # into a 400) is replaced by the 413 below.
            if not over:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over:
            await send_json(send, 413, self._detail(), [(b"connection", b"close")])
