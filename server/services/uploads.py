"""Upload safety: a body-size limit enforced while the body streams in, and image decoding whose
memory is bounded before the first pixel is decoded, turning every kind of bad file into a clear
400/413/415/422 instead of a crash.

Memory per upload, by construction (see docs/deployment.md, "Serving safely"): the body (at most
``max_upload_bytes``), one decode predicted from the header to peak at most ``max_decode_bytes``
(:func:`decode_cost`) and the analysis of an image of at most ``(4 × resize)²`` pixels, or of the size
the index's resize gives a larger one (:func:`analysis_dims`). How many uploads hold that at once is
bounded by the runtime's upload semaphore (``upload_concurrency``).

Within that memory an upload is decoded as the index decodes its images (whole, converted to RGB, then
resized as ``eval_transform`` resizes), so an indexed image uploaded again gets the model input the
index used, at any size; only an image whose exact decode would pass ``max_decode_bytes`` is decoded
at a DCT scale (JPEG) or reduced strip by strip (others) instead, its model input then close to, not
equal to, the index's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import warnings
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.datasets import to_rgb
from indexer.segments import resized_size
from server.errors import ApiError
from server.guard import Budget
from server.services.image_structure import StructureLimits, check_structure, too_complex

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
#: Room for the multipart envelope (boundaries, part headers) around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def mmap_large_allocations(threshold: int = 4 << 20) -> bool:
    """Have glibc serve allocations of ``threshold`` bytes or more by ``mmap`` (returned to the system
    on free). Otherwise its adaptive threshold grows to 32 MiB after the first large free, and the
    16 MiB blocks of every decoded upload stay in per-thread heaps: the process's memory would then
    grow with each request thread instead of returning to its idle size. Returns whether it applied
    (False off glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def too_large(limit: int) -> ApiError:
    """The 413 for a body over ``limit`` bytes. It closes the connection: the server reads no more of
    a body it refused (a client that keeps sending gets a reset, not a server that drains it)."""
    return ApiError(
        413,
        "upload_too_large",
        f"request body exceeds the limit of {limit} bytes ({_mib(limit)})",
        headers={"Connection": "close"},
    )


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


#: Longest accepted ratio of an upload's longer side to its shorter side.
MAX_ASPECT_RATIO = 20
#: The formats an upload may be in (Pillow opens others too, some through external programs).
Image.init()
FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP") if f in Image.OPEN)
#: Peak bytes held per decoded pixel while decoding (measured on 36 MP images with Pillow 13, plus
#: a margin): WebP's decoder keeps whole RGBA canvases (16.0 measured); TIFF may decode through RGBA
#: strips; the rest peak at 6.1 (16-bit PNG: its own 2 bytes and the 32-bit copy that is reduced).
DECODE_BYTES_PER_PIXEL = {"WEBP": 17.0, "TIFF": 8.5}
DEFAULT_DECODE_BYTES_PER_PIXEL = 6.5
#: JPEG: per pixel of the (DCT-scaled) output, and, for progressive files, per component sample of
#: the full image (libjpeg buffers every coefficient: 2 bytes each).
JPEG_BYTES_PER_PIXEL, JPEG_COEFFICIENT_BYTES = 4.5, 2.1
#: What to_rgb allocates per pixel at full size: alpha composited on white (an RGBA copy, the white
#: background, the composite, the RGB result), 16-bit and float greys (float64 arrays and their
#: temporaries, the 8-bit rescale, RGB: 19 B measured on a 2000² 16-bit PNG) and the rest (one RGB copy).
CONVERSION_BYTES_PER_PIXEL = {"alpha": 15.0, "wide": 24.0, "other": 3.0}
#: Images up to this many times ``resize`` a side (in area) are analysed at their own size.
FULL_SIZE_SIDES = 4
STRIP_PIXELS = 1 << 20
#: Bytes handed to the decoder between two checks of the upload's budget: a progressive JPEG's scans
#: are decoded as their bytes arrive, so a chunk holds at most a few ms of work in an ordinary file.
DECODE_CHUNK = 2048
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr"})
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def analysis_dims(width: int, height: int, resize: int) -> tuple[int, int]:
    """The (width, height) an image of ``width``×``height`` is analysed at for an index made at ``resize``.

    The image itself up to :data:`FULL_SIZE_SIDES`² × ``resize``² pixels (1 MP at resize 256: every COCO
    image), so an indexed image's masks come out at its own size, as the index holds them; a larger one
    at the size ``resize`` gives it (:func:`indexer.segments.resized_size`: shorter side ``resize``), which
    is what the model sees of it anyway. Either way the model's input is the index's for the same pixels.
    With the aspect ratio capped at :data:`MAX_ASPECT_RATIO`, at most ``MAX_ASPECT_RATIO × resize²``
    pixels beyond the first bound.
    """
    if width * height <= (FULL_SIZE_SIDES * resize) ** 2:
        return width, height
    return resized_size(width, height, resize)


def bounded(img: Image.Image, resize: int) -> Image.Image:
    """``img`` resized (bilinear, as ``eval_transform``'s resize) to :func:`analysis_dims`, or ``img`` itself
    when already there. Masks, RLEs and overlays of an analysis then stay within those dims however large
    or thin the upload was."""
    size = analysis_dims(img.width, img.height, resize)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR)


def _reducible(img: Image.Image) -> Image.Image:
    """``img`` in a mode that :meth:`PIL.Image.Image.reduce` averages meaningfully (no palette indices)."""
    if img.mode in _REDUCIBLE:
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img.convert("RGB")


def reduce_in_strips(img: Image.Image, factor: int, strip_pixels: int = STRIP_PIXELS) -> Image.Image:
    """``img`` box-reduced by ``factor`` (each output pixel the mean of a ``factor``×``factor`` block),
    a few rows at a time: ``Image.reduce`` on the whole image would first copy it (premultiplying
    alpha), so at most two strips of about ``strip_pixels`` pixels are held besides ``img``.
    Edge rows and columns that do not fill a block are dropped."""
    width, height = img.width // factor, img.height // factor
    out = Image.new(img.mode, (width, height))
    rows = factor * max(1, strip_pixels // max(1, img.width * factor))
    for top in range(0, height * factor, rows):
        bottom = min(top + rows, height * factor)
        out.paste(img.crop((0, top, width * factor, bottom)).reduce(factor), (0, top // factor))
    return out


def _orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        return 1
    return value if value in _TRANSPOSE else 1


def decode_cost(img: Image.Image, full_pixels: int | None = None, exact: bool = False) -> int:
    """Peak bytes that decoding the opened (for a JPEG: drafted) ``img`` will hold, from its header.

    ``full_pixels``: the JPEG's pixels before the draft (its coefficients are all kept when progressive).
    ``exact``: the whole image is also converted to RGB at full size (:func:`core.datasets.to_rgb`), as
    the index converts it; the conversion's copies are added (:data:`CONVERSION_BYTES_PER_PIXEL`).
    """
    pixels = img.width * img.height
    if img.format in ("JPEG", "MPO"):
        cost = JPEG_BYTES_PER_PIXEL * pixels
        if img.info.get("progressive") or img.info.get("progression"):
            cost += JPEG_COEFFICIENT_BYTES * len(img.getbands()) * (full_pixels or pixels)
    else:
        cost = DECODE_BYTES_PER_PIXEL.get(img.format or "", DEFAULT_DECODE_BYTES_PER_PIXEL) * pixels
    if exact:
        cost += _conversion_bytes(img) * pixels
    return int(cost)


def _conversion_bytes(img: Image.Image) -> float:
    """Bytes per pixel that :func:`core.datasets.to_rgb` allocates for ``img``'s mode (0 for RGB)."""
    if img.mode == "RGB":
        return 0.0
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return CONVERSION_BYTES_PER_PIXEL["alpha"]
    if img.mode.startswith("I") or img.mode == "F":
        return CONVERSION_BYTES_PER_PIXEL["wide"]
    return CONVERSION_BYTES_PER_PIXEL["other"]


def decode_upload(
    data: bytes,
    max_pixels: int,
    resize: int,
    name: str = "upload",
    max_decode_bytes: int = 256 << 20,
    limits: StructureLimits | None = None,
    budget: Budget | None = None,
) -> Image.Image:
    """Decode uploaded bytes to an 8-bit RGB image bounded by :func:`analysis_dims` (EXIF orientation
    applied, alpha on white).

    Memory is bounded before any pixel is decoded. From the header: at most ``max_pixels`` pixels,
    an aspect ratio of at most :data:`MAX_ASPECT_RATIO`, and a predicted decode peak
    (:func:`decode_cost`) of at most ``max_decode_bytes``. When the exact decode fits that (the whole
    image, converted by :func:`core.datasets.to_rgb`), it is the one made, and the result is resized
    (bilinear) to the analysis size as ``eval_transform`` would resize it, so the model's input equals
    the index's. Otherwise a JPEG is decoded at the smallest DCT scale (1/2 … 1/8) that still covers
    the analysis size, and other formats are decoded once at full size and box-reduced strip by strip
    (:func:`reduce_in_strips`), so no second full-size copy is made.

    CPU is bounded too. Before anything is decoded, the file's structure is counted
    (:func:`server.services.image_structure.check_structure`: JPEG scans, frames, chunks, at most
    ``limits``) and so are the decoder's tiles; then the decoder is fed :data:`DECODE_CHUNK` bytes at
    a time and ``budget`` is checked before each chunk, so a decode stops at its deadline, when the
    client leaves or when the server stops.

    Raises :class:`ApiError`: 400 ``empty_file`` / ``bad_image`` (truncated or corrupt), 415
    ``unsupported_media_type`` (not an image in :data:`FORMATS`), 413 ``image_too_large`` (more than
    ``max_pixels`` pixels, or more than ``max_decode_bytes`` to decode), 413 ``image_too_complex`` (more
    scans, frames or chunks than ``limits``), 422 ``image_aspect_ratio`` (sides further apart than
    :data:`MAX_ASPECT_RATIO`:1), and whatever ``budget.check`` raises.
    """
    if not data:
        raise ApiError(400, "empty_file", f"{name} is empty (0 bytes)")
    limits = limits or StructureLimits()
    check_structure(data, limits, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(_CheckedReader(data, budget.check if budget else None), formats=FORMATS)
        except Image.DecompressionBombError as e:
            raise ApiError(413, "image_too_large", f"{name}: {e}") from e
        except UnidentifiedImageError as e:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"{name} is not an image in a format the server reads ({', '.join(FORMATS)})",
            ) from e
        except Exception as e:  # noqa: BLE001 - a corrupt header raises many types
            raise ApiError(400, "bad_image", f"{name}: cannot read the image header ({type(e).__name__}: {e})") from e
        with img:
            width, height, fmt = img.width, img.height, img.format
            _check_size(name, width, height, max_pixels)
            target = analysis_dims(width, height, resize)
            orientation = _orientation(img)
            try:
                # Exact when it fits: the whole image decoded and converted as the index does it, then
                # resized as eval_transform resizes it, so the model's input is the index's.
                exact = decode_cost(img, width * height, exact=True) <= max_decode_bytes
                if not exact and fmt in ("JPEG", "MPO"):
                    img.draft(img.mode, target)  # DCT-domain downscale: never below the target size
                cost = decode_cost(img, width * height, exact=exact)
                if cost > max_decode_bytes:
                    raise ApiError(
                        413,
                        "image_too_large",
                        f"{name} ({fmt}, {width}×{height} pixels) would take {_mib(cost)} to decode, above the "
                        f"per-upload limit of {_mib(max_decode_bytes)}",
                    )
                if len(img.tile) > limits.chunks:  # one decoder call each (a TIFF's strips or tiles)
                    raise too_complex(name, str(fmt), "tiles", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
                img.decodermaxblock = DECODE_CHUNK
                img.load()
                if exact:  # load_rgb's conversion, then eval_transform's resize (before any EXIF turn)
                    small = to_rgb(img)
                    if small.size != target:
                        small = small.resize(target, Image.Resampling.BILINEAR)
                else:
                    small = _reducible(img)
                    factor = min(small.width // target[0], small.height // target[1])
                    if factor > 1:
                        small = reduce_in_strips(small, factor)
                if small is img:
                    small = img.copy()  # outlive the file object closed below
            except ApiError:
                raise
            except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
                raise ApiError(
                    400,
                    "bad_image",
                    f"{name} ({fmt}) could not be decoded, it may be truncated or corrupt: {type(e).__name__}: {e}",
                ) from e
    for step in _TRANSPOSE.get(orientation, ()):
        small = small.transpose(step)
    if orientation in (5, 6, 7, 8):  # a quarter turn: the analysis size turns with the image
        target = target[::-1]
    rgb = to_rgb(small)
    return rgb if rgb.size == target else rgb.resize(target, Image.Resampling.BILINEAR)


class _CheckedReader(io.BytesIO):
    """The upload's bytes as a file whose every read first calls ``check`` (which may raise to stop)."""

    def __init__(self, data: bytes, check: Callable[[], None] | None) -> None:
        super().__init__(data)
        self._check = check

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes, after ``check``."""
        if self._check is not None:
            self._check()
        return super().read(size)


def _check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ApiError(400, "bad_image", f"{name} has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"{name} is {width}×{height} = {width * height} pixels, above the limit of {max_pixels}",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ApiError(
            422,
            "image_aspect_ratio",
            f"{name} is {width}×{height}: its sides differ by more than {MAX_ASPECT_RATIO}:1, the limit",
        )
