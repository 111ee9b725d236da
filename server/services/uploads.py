"""Upload safety: a body-size limit enforced while the body streams in, and image decoding that
turns every kind of bad file into a clear 400/413/415 instead of a crash.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.datasets import ImageReadError, load_rgb
from server.errors import ApiError

#: Room for the multipart envelope (boundaries, part headers) around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def too_large(limit: int) -> ApiError:
    """The 413 for a body over ``limit`` bytes."""
    return ApiError(413, "upload_too_large", f"request body exceeds the limit of {limit} bytes ({_mib(limit)})")


class BodyLimitMiddleware:
    """Pure ASGI middleware: reject bodies above ``limit_for(path)`` bytes before reading them whole.

    A declared ``Content-Length`` over the limit is answered 413 at once (nothing is read); otherwise
    ``receive`` counts bytes as they arrive and raises a 413 :class:`ApiError` the moment the count
    passes the limit, which FastAPI's body parsing re-raises and the error handler renders as JSON.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


async def _send_413(send: Send, limit: int) -> None:
    err = too_large(limit)
    body = json.dumps({"error": {"code": err.code, "message": err.message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> Image.Image:
    """Decode uploaded bytes to an 8-bit RGB image (EXIF orientation applied, alpha on white).

    Raises :class:`ApiError`: 400 ``empty_file`` / ``bad_image`` (truncated or corrupt), 415
    ``unsupported_media_type`` (not an image), 413 ``image_too_large`` (more than ``max_pixels``
    pixels, checked from the header before any pixel is decoded).
    """
    if not data:
        raise ApiError(400, "empty_file", f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height, fmt = probe.width, probe.height, probe.format
    except Image.DecompressionBombError as e:
        raise ApiError(413, "image_too_large", f"{name}: {e}") from e
    except UnidentifiedImageError as e:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{name} is not an image in a format the server can read (JPEG, PNG, WebP, ...)",
        ) from e
    except Exception as e:  # noqa: BLE001 - a corrupt header raises many types
        raise ApiError(400, "bad_image", f"{name}: cannot read the image header ({type(e).__name__}: {e})") from e
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"{name} is {width}×{height} = {width * height} pixels, above the limit of {max_pixels}",
        )
    if width < 1 or height < 1:
        raise ApiError(400, "bad_image", f"{name} has no pixels ({width}×{height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_rgb(io.BytesIO(data), upright=True)
    except ImageReadError as e:
        raise ApiError(
            400,
            "bad_image",
            f"{name} ({fmt}) could not be decoded, it may be truncated or corrupt: {e.reason or e}",
        ) from e
