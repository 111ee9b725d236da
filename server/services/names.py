"""Server paths named relative to their folders, never absolute, in every answer.

A path the server holds (a checkpoint, a data root, an index, a job's output) is shown relative to the
folder it lives in: ``<runs_dir>/demo/current.pth`` as ``demo/current.pth``, the data root as its
name. :class:`ServerPaths` knows the folders (the configured ones, plus those of every index and
checkpoint the server has loaded) and rewrites text and JSON values; :class:`PathScrubMiddleware`
applies it to every JSON body the app sends (answers, errors, job logs), so a route added later cannot
leak one either.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _forms(path: Path) -> list[str]:
    """The absolute spellings of ``path`` (as given and resolved); none for the file system's root."""
    out = []
    for form in (path.absolute(), path.resolve()):
        text = str(form).rstrip(os.sep)
        if text and text != os.sep and len(Path(text).parts) > 1:
            out.append(text)
    return out


class ServerPaths:
    """Rewrites absolute paths under known folders to paths relative to the deepest folder holding them."""

    def __init__(self, folders: Iterable[str | os.PathLike] = ()) -> None:
        self._lock = threading.Lock()
        self._prefixes: tuple[str, ...] = ()
        self.add(*folders)

    @classmethod
    def for_settings(cls, settings: Any) -> ServerPaths:
        """The folders of ``settings`` (runs, indexes, state, data root, the configured index's and
        checkpoint's folders), the project's and the working directory."""
        folders: list[Path] = [settings.runs_dir, settings.indexes_dir, settings.state_dir, settings.data_root]
        for configured in (settings.index, settings.checkpoint):
            if configured is not None:
                folders += [Path(configured).parent, Path(configured).parent.parent]
        return cls([*folders, PROJECT_ROOT, Path.cwd()])

    def add(self, *folders: str | os.PathLike) -> None:
        """Name paths under ``folders`` relative to them from now on (the deepest folder wins)."""
        with self._lock:
            found = set(self._prefixes)
            for folder in folders:
                found.update(_forms(Path(folder)))
            self._prefixes = tuple(sorted(found, key=len, reverse=True))

    def text(self, value: str) -> str:
        """``value`` with every absolute path under a known folder made relative to that folder, and a
        value that is a known folder itself replaced by the folder's name."""
        for prefix in self._prefixes:
            if value == prefix:
                return Path(prefix).name
            if prefix in value:
                value = value.replace(prefix + os.sep, "")
        return value

    def value(self, value: Any) -> Any:
        """``value`` (dicts, lists, strings) with :meth:`text` applied to every string."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def json_bytes(self, body: bytes) -> bytes:
        """A JSON document's bytes with the rewrite of :meth:`text` applied to its strings (a folder alone as
        a string becomes its name; paths under it lose the folder's part)."""
        for prefix in self._prefixes:
            raw = prefix.encode()
            if raw not in body:
                continue
            body = body.replace(b'"' + raw + b'"', b'"' + Path(prefix).name.encode() + b'"')
            body = body.replace(raw + os.sep.encode(), b"")
        return body


class PathScrubMiddleware:
    """Applies :meth:`ServerPaths.json_bytes` to every ``application/json`` body the app sends."""

    def __init__(self, app: ASGIApp, paths: ServerPaths) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def scrubbing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                if headers.get("content-type", "").startswith("application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self.paths.json_bytes(b"".join(chunks))
            headers = MutableHeaders(raw=list(start.get("headers", [])))
            headers["content-length"] = str(len(body))
            await send({**start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, scrubbing_send)
