"""Optional API-key auth, as pure ASGI middleware: it answers 401 from the request head alone, before a byte of
the body is read, so a caller without a key cannot make the router buffer an upload.

Off when ``AUDIO_SCORE_API_KEYS`` is empty. Keys come as ``X-API-Key: K`` or ``Authorization: Bearer K``; the
probes and docs (``/healthz``, ``/readyz``, ``/metrics``, ``/docs``, ``/openapi.json``) stay open.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/", "/try"}
)
#: Paths under these prefixes are open too: the try page's static files.
OPEN_PREFIXES = ("/try/",)


async def send_json(
    send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = (), *, more_body: bool = False
) -> None:
    """A ``{"detail": ...}`` response straight from ASGI middleware; with ``more_body`` the whole body is written
    but the response is left open, for the caller to complete with an empty ``http.response.body``."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class APIKeyMiddleware:
    """``X-API-Key: K`` or ``Authorization: Bearer K``; health, metrics and docs stay open for probes."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if offered is None and auth[:7].lower() == b"bearer ":
            offered = auth[7:].strip()
        return offered is not None and any(hmac.compare_digest(offered, k) for k in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or _open(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            "missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            [(b"www-authenticate", b"Bearer")],
        )
