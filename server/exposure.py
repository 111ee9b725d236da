"""Exposure decided by the socket, not by a setting: which addresses the server really listens on.

``create_app`` cannot know where a launcher will bind (``uvicorn --factory server.app:create_app
--host 0.0.0.0`` never tells ``Settings.host``), so the lifespan asks, in order:

1. the uvicorn ``Config`` that is starting this app (found on the lifespan's call stack: uvicorn's
   lifespan task holds it), whose ``host``/``port``/``fd``/``uds`` say what it is about to bind;
2. the TCP sockets this process already listens on (``/proc/self/net/tcp{,6}`` matched with the
   process's descriptors), which covers sockets bound before start-up (gunicorn workers,
   ``uvicorn --fd``, ``--workers``);
3. the configured ``host``.

Any non-loopback address among them makes the server *exposed*: without an API token it refuses to
start. Whatever the launcher, :class:`ExposureMiddleware` also refuses every request that arrives on
a non-loopback local address when no token is set, and in loopback mode accepts only localhost Host
names (Starlette's ``TrustedHostMiddleware`` rule, answered with a typed JSON 400), which stops DNS
rebinding: a page on another site that resolves its own name to 127.0.0.1 sends that name as Host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.settings import Settings, is_loopback

logger = logging.getLogger(__name__)

#: Host names a loopback-mode server answers to (ports are ignored by the check).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]", "*.localhost")


class StartupError(RuntimeError):
    """A configuration the server refuses to start with; the message is one line for the operator."""


def _uvicorn_bind(config: Any) -> list[str]:
    """The addresses a uvicorn ``Config`` binds (or an inherited descriptor is bound to)."""
    if getattr(config, "uds", None):
        return []  # a Unix socket: reachable only through the file system
    fd = getattr(config, "fd", None)
    if fd is not None:
        try:
            with socket.socket(fileno=os.dup(fd)) as s:
                return [str(s.getsockname()[0])]
        except OSError:
            return ["<unknown descriptor>"]
    host = getattr(config, "host", None)
    return [str(host)] if host is not None else []


def uvicorn_config() -> Any | None:
    """The ``uvicorn.Config`` on the current call stack (uvicorn's lifespan task holds it), or None."""
    config_type = getattr(sys.modules.get("uvicorn.config"), "Config", None)
    if config_type is None:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, config_type):
                return value
            attrs = getattr(value, "__dict__", None)  # plain attributes only: no property runs here
            inner = attrs.get("config") if isinstance(attrs, dict) else None
            if isinstance(inner, config_type):
                return inner
        frame = frame.f_back
    return None


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6} (host-order hex words) as text."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening_addresses(proc: Path = Path("/proc/self")) -> list[str]:
    """The local addresses of the TCP sockets this process listens on (empty without /proc)."""
    inodes = set()
    try:
        for fd in (proc / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                found.append(_hex_address(cols[1].split(":")[0]))
    return found


def is_exposed_address(address: str) -> bool:
    """True for an address that other machines can reach (anything but loopback)."""
    return not is_loopback(address)


def bound_addresses(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """Every address the server binds or listens on, as far as this process can tell (see the module)."""
    found = list(extra)
    config = uvicorn_config()
    if config is not None:
        found += _uvicorn_bind(config)
    found += listening_addresses()
    found.append(settings.host)
    return list(dict.fromkeys(found))


def decide_exposure(settings: Settings) -> bool:
    """Whether the server is exposed; raises :class:`StartupError` when it is and no token is set."""
    addresses = bound_addresses(settings)
    exposed = [a for a in addresses if is_exposed_address(a)]
    if exposed and not settings.has_token:
        raise StartupError(
            f"refusing to listen on {', '.join(exposed)} (not loopback) without an API token: "
            "set SLOTCON_API_TOKEN, or bind to 127.0.0.1"
        )
    if exposed:
        logger.info("exposed on %s: mutating routes and path/log reads need the API token", ", ".join(exposed))
    return bool(exposed)


def _local_ip(scope: Scope) -> str | None:
    """The connection's local IP (``scope["server"]``), or None when it is not an IP (a test client)."""
    server = scope.get("server")
    if not server:
        return None
    try:
        return str(ipaddress.ip_address(str(server[0]).strip("[]")))
    except ValueError:
        return None


@dataclass
class Exposure:
    """What the lifespan decided (shared with :class:`ExposureMiddleware`)."""

    exposed: bool = False


class ExposureMiddleware:
    """Refuses requests that reached a non-loopback socket of a token-less server (whatever the
    launcher), and in loopback mode (``state.exposed`` false) accepts only ``allowed_hosts``.
    """

    def __init__(self, app: ASGIApp, settings: Settings, state: Exposure, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.allowed_hosts = [h.lower() for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        local = _local_ip(scope)
        via_network = local is not None and is_exposed_address(local)
        if via_network and not self.settings.has_token:
            logger.error("refused a request on %s: the server is reachable beyond loopback without a token", local)
            await _refuse(send)
            return
        if via_network or self.state.exposed:
            await self.app(scope, receive, send)
            return
        host = request_host(scope)
        if not host_allowed(host, self.allowed_hosts):
            await _error(
                send,
                400,
                "bad_host",
                f"Host {host!r} is not served here: this server answers to "
                f"{', '.join(self.allowed_hosts)} (add names with SLOTCON_TRUSTED_HOSTS)",
            )
            return
        await self.app(scope, receive, send)


def request_host(scope: Scope) -> str:
    """The Host header's name without its port (``[::1]`` kept whole)."""
    host = Headers(scope=scope).get("host", "").strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.split(":", 1)[0]


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """True when ``host`` is one of ``patterns`` (``*.example`` matches any sub-domain of example)."""
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


async def _refuse(send: Send) -> None:
    await _error(
        send,
        503,
        "exposed_without_token",
        "this server is reachable beyond loopback without an API "
        "token; it serves nothing until SLOTCON_API_TOKEN is set",
    )


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class StartupErrorMiddleware:
    """Makes a :class:`StartupError` raised in the lifespan a one-line message in uvicorn's log
    (Starlette would send the whole traceback), so the launcher prints it and exits non-zero."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def one_line(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed":
                exc = sys.exc_info()[1]
                if isinstance(exc, StartupError):
                    message = {**message, "message": f"slotcon serve: {exc}"}
            await send(message)

        await self.app(scope, receive, one_line)
