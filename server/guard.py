"""Work that stops: a per-request cancellation flag set when the client leaves, deadlines checked between
chunks of work, concurrency slots for the expensive routes, and the refusal of browsers' cross-site
requests.

- :class:`DisconnectMiddleware` is the only reader of the server's ``receive`` (from the app's first read,
  or at once for a request without a body): it passes messages on one at a time (so bodies still stream
  with back-pressure) and sets the request's cancellation flag (:func:`cancel_flag`) the moment the
  client disconnects, even while the route runs in a worker thread and reads nothing.
- :class:`Budget` is what a route's work checks between chunks (decoder input, figure cells, analysis
  steps): it raises once the client has left, the server is stopping, or the deadline has passed, so the
  work itself stops instead of running on behind an error answer.
- :class:`CrossSiteMiddleware` answers 403 to what a browser sends on behalf of a page of another site
  (its ``Origin`` or ``Sec-Fetch-Site``) to a state-changing or expensive route; requests without those
  headers (curl, scripts, the UI's server-side client) are served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError
from server.services.memory import Activity

#: The scope key holding a request's cancellation flag (a ``threading.Event``).
CANCEL_KEY = "slotcon.cancel"


def cancel_flag(scope: Scope) -> threading.Event:
    """The request's cancellation flag (set when its client disconnects); a fresh unset one outside the
    middleware."""
    flag = scope.get(CANCEL_KEY)
    return flag if isinstance(flag, threading.Event) else threading.Event()


class DisconnectMiddleware:
    """Pure ASGI middleware: a task reads the server's ``receive`` and hands each message to the app
    through a one-message queue; an ``http.disconnect`` also sets the request's cancellation flag.
    ``activity`` (optional) counts the requests in flight."""

    def __init__(self, app: ASGIApp, activity: Activity | None = None) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.activity is None:
            await self._serve(scope, receive, send)
            return
        self.activity.enter()
        try:
            await self._serve(scope, receive, send)
        finally:
            self.activity.leave()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        flag = threading.Event()
        scope[CANCEL_KEY] = flag
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)

        async def pump() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    flag.set()
                await queue.put(message)
                if message["type"] == "http.disconnect":
                    return

        tasks: list[asyncio.Task] = []

        async def first_read_starts_the_pump() -> Message:
            if not tasks:
                tasks.append(asyncio.create_task(pump()))
            return await queue.get()

        # A request with a body is read only once the app asks (a body refused from its declared length is
        # never asked for: no "100 Continue"); one without starts being watched at once.
        if not _has_body(scope):
            tasks.append(asyncio.create_task(pump()))
        try:
            await self.app(scope, first_read_starts_the_pump, send)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _has_body(scope: Scope) -> bool:
    """True when the request declares a body (a non-zero Content-Length, or chunked)."""
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0


@dataclass
class Budget:
    """Limits a piece of work checks between its chunks (:meth:`check`): a deadline, the client's
    cancellation flag and the server's stopping flag."""

    what: str
    seconds: float
    cancel: threading.Event | None = None
    stopping: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)

    def check(self) -> None:
        """Return when the work may go on; raise :class:`ApiError` 499 ``client_gone`` (no one will read
        it), 503 ``shutting_down`` or 503 ``deadline_exceeded`` (naming the limit) when it must stop."""
        self.check_stop()
        if self.elapsed > self.seconds:
            raise ApiError(
                503, "deadline_exceeded",
                f"{self.what} took more than {self.seconds:g} s, the limit for it; the work was stopped",
                headers={"Retry-After": "5"},
            )  # fmt: skip

    def check_stop(self) -> None:
        """:meth:`check` without the deadline: raise only when the client has left or the server stops."""
        if self.cancel is not None and self.cancel.is_set():
            raise ApiError(499, "client_gone", f"{self.what}: the client disconnected; the work was stopped")
        if self.stopping is not None and self.stopping.is_set():
            raise ApiError(503, "shutting_down", f"{self.what}: the server is shutting down; retry later")

    @property
    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.monotonic() - self.started


@contextlib.contextmanager
def slot(slots: threading.BoundedSemaphore, wait_s: float, what: str, budget: Budget | None = None) -> Iterator[None]:
    """Hold one of ``slots`` while the block runs: 503 ``busy`` after ``wait_s`` seconds of waiting; while
    waiting, ``budget`` is checked every 0.2 s (a client that left stops queueing)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(
                503, "busy", f"every slot for {what} stayed busy for {wait_s:g} s; retry later",
                headers={"Retry-After": "5"},
            )  # fmt: skip
        if slots.acquire(timeout=min(0.2, left)):
            break
        if budget is not None:
            budget.check_stop()
    try:
        yield
    finally:
        slots.release()


#: Methods a page of another site must not make the server perform.
STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: GET routes that do more than a lookup (rendering, figures, comparisons, decoding images, opening
#: named indexes): path prefixes under /api.
EXPENSIVE_GETS = (
    "/api/figure",
    "/api/compare",
    "/api/images/",
    "/api/indexes",
    "/api/prototypes/similarity",
    "/api/prototypes/map",
    "/api/stats",
    "/api/eval",
    "/api/checkpoints",
)


def is_expensive(method: str, path: str) -> bool:
    """True for a request a cross-site page must not trigger: a state-changing method, or an expensive GET."""
    if method in STATE_CHANGING:
        return True
    return method in ("GET", "HEAD") and path.startswith(EXPENSIVE_GETS)


def _origin_key(url: str) -> tuple[str, str] | None:
    """(scheme, host:port with the default port spelled out) of an origin, None when it is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}"


def cross_site(scope: Scope, trusted_origins: Iterable[str]) -> str | None:
    """Why this request is a browser's cross-site request (None when it is not): an ``Origin`` that is
    neither the server's own (the Host it was sent to) nor a trusted one, or ``Sec-Fetch-Site`` saying
    ``cross-site``/``same-site`` without a trusted ``Origin``."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    trusted = {_origin_key(o) for o in trusted_origins} - {None}
    if origin is not None:
        key = _origin_key(origin)
        if key is not None and key in trusted:
            return None
        scheme = scope.get("scheme", "http")
        own = _origin_key(f"{scheme}://{headers.get('host', '')}")
        if key is None or key != own:
            return f"Origin {origin[:100]!r} is not this server's"
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site") and origin is None:
        return f"Sec-Fetch-Site is {site!r}"
    return None


class CrossSiteMiddleware:
    """Refuses (403 ``cross_site``) a browser's cross-site request to a state-changing or expensive route
    (:func:`is_expensive`); ``trusted_origins`` (the UI's, as CORS allows it) are served."""

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str]) -> None:
        self.app = app
        self.trusted = list(trusted_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_expensive(scope["method"], scope["path"]):
            why = cross_site(scope, self.trusted)
            if why is not None:
                body = json.dumps({
                    "error": {
                        "code": "cross_site",
                        "message": f"refused a cross-site request to {scope['method']} {scope['path']}: {why}; "
                        "pages of other sites cannot use this server (scripts and curl send no Origin)",
                    }
                }).encode()  # fmt: skip
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
