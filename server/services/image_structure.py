"""The structure of an uploaded image file, counted before any decoding: JPEG scans and markers, PNG
chunks and APNG frames, GIF frames and blocks, WebP chunks and frames, TIFF pages.

A header states the pixel count, not the work: a progressive JPEG's decoder goes over every
coefficient once per scan, so an ordinary 6000×6000 header followed by its last 59-byte scan repeated
100 000 times costs about 12 ms of CPU per scan, twenty minutes in all, in a file of a few megabytes.
The walk below reads only the container (segment lengths; a JPEG's entropy-coded data is skipped with
one regular-expression search per scan) and stops at the first limit passed, so it costs milliseconds
whatever the file. Ordinary files stay far inside the limits: libjpeg's and Pillow's progressive
JPEGs have 10 scans (6 when grey), mozjpeg's about as many, and a 10 MB PNG written in 8 KiB IDAT
chunks has 1 300 chunks.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from server.errors import ApiError

# A marker inside a JPEG's entropy-coded data: 0xFF followed by neither a stuffed zero, a restart
# marker (D0-D7) nor a fill byte (FF), whose run ends at the marker that follows it.
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: GIF data comes in sub-blocks of at most 255 bytes; walking this many of them takes about 0.1 s.
GIF_MIN_BLOCKS = 200_000


@dataclass(frozen=True)
class StructureLimits:
    """The most an upload's file may hold: JPEG scans, frames (animation frames, TIFF pages) and chunks
    (PNG chunks, JPEG markers, WebP chunks, GIF extension blocks, decoder tiles)."""

    scans: int = 64
    frames: int = 1000
    chunks: int = 10_000


@dataclass
class Structure:
    """What the walk counted (a count stays 0 where the format has no such thing)."""

    format: str
    scans: int = 0
    frames: int = 0
    chunks: int = 0


def check_structure(data: bytes, limits: StructureLimits, name: str = "upload") -> Structure:
    """Count the structure of ``data`` by its format's signature and refuse what passes ``limits``.

    Returns the counts (format ``"other"`` for a file this module does not walk: the decoder's header
    checks apply to it alone). A file that ends early or is malformed is not refused here: the walk
    stops, and the decoder reports it. Raises :class:`ApiError` 413 ``image_too_complex`` naming the
    limit passed.
    """
    if data[:3] == b"\xff\xd8\xff":
        found = _jpeg(data, limits, name)
    elif data[:8] == _PNG_SIGNATURE:
        found = _png(data, limits, name)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        found = _gif(data, limits, name)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        found = _webp(data, limits, name)
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        found = _tiff(data, limits, name)
    else:
        found = Structure("other")
    return found


def too_complex(name: str, fmt: str, what: str, limit: int, setting: str) -> ApiError:
    """The 413 for a file with more ``what`` than ``limit`` (``setting``: the variable that sets it)."""
    return ApiError(
        413,
        "image_too_complex",
        f"{name} ({fmt}) has more than {limit} {what}, the limit ({setting}); refused before decoding",
    )


def _jpeg(data: bytes, limits: StructureLimits, name: str) -> Structure:
    found = Structure("JPEG")
    pos, size = 2, len(data)
    while pos + 1 < size:
        if data[pos] != 0xFF:
            break  # garbage between segments: the decoder says what is wrong
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        found.chunks += 1
        if found.chunks > limits.chunks:
            raise too_complex(name, "JPEG", "markers", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
        if marker == 0xD9:  # EOI: the decoder reads no further (an MPO's other pictures are never decoded)
            break
        if marker in _JPEG_STANDALONE or marker == 0xD8:
            continue
        if pos + 2 > size:
            break
        (length,) = struct.unpack_from(">H", data, pos)
        pos += length
        if marker == 0xDA:  # SOS: a scan, then its entropy-coded data up to the next marker
            found.scans += 1
            if found.scans > limits.scans:
                raise too_complex(name, "JPEG", "scans", limits.scans, "SLOTCON_MAX_JPEG_SCANS")
            match = _JPEG_MARKER.search(data, pos)
            if match is None:
                break
            pos = match.start()
    found.frames = 1
    return found


def _png(data: bytes, limits: StructureLimits, name: str) -> Structure:
    found = Structure("PNG")
    pos, size = 8, len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        found.chunks += 1
        if found.chunks > limits.chunks:
            raise too_complex(name, "PNG", "chunks", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
        if kind == b"fcTL":  # APNG: one frame control chunk per frame
            found.frames += 1
            if found.frames > limits.frames:
                raise too_complex(name, "PNG", "frames", limits.frames, "SLOTCON_MAX_IMAGE_FRAMES")
        if kind == b"IEND":
            break
    found.frames = max(1, found.frames)
    return found


def _gif(data: bytes, limits: StructureLimits, name: str) -> Structure:
    found = Structure("GIF")
    size = len(data)
    if size < 13:
        return found
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    max_blocks = max(GIF_MIN_BLOCKS, size // 64)
    blocks = 0
    while pos < size:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x2C:  # an image (a frame): descriptor, local colour table, LZW code size
            found.frames += 1
            if found.frames > limits.frames:
                raise too_complex(name, "GIF", "frames", limits.frames, "SLOTCON_MAX_IMAGE_FRAMES")
            if pos + 10 > size:
                break
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        elif kind == 0x21:  # an extension: label, then data sub-blocks
            found.chunks += 1
            if found.chunks > limits.chunks:
                raise too_complex(name, "GIF", "extension blocks", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
            pos += 2
        else:
            break  # not a GIF block: the decoder reports it
        while pos < size and data[pos]:  # data sub-blocks, ended by a zero-length one
            pos += 1 + data[pos]
            blocks += 1
            if blocks > max_blocks:
                raise too_complex(name, "GIF", "data blocks", max_blocks, "its size / 64, at least 200000")
        pos += 1
    return found


def _webp(data: bytes, limits: StructureLimits, name: str) -> Structure:
    found = Structure("WEBP", frames=1)
    pos, size, frames = 12, len(data), 0
    while pos + 8 <= size:
        kind, length = struct.unpack_from("<4sI", data, pos)
        pos += 8 + length + (length & 1)
        found.chunks += 1
        if found.chunks > limits.chunks:
            raise too_complex(name, "WEBP", "chunks", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
        if kind == b"ANMF":
            frames += 1
            if frames > limits.frames:
                raise too_complex(name, "WEBP", "frames", limits.frames, "SLOTCON_MAX_IMAGE_FRAMES")
    found.frames = max(1, frames)
    return found


def _tiff(data: bytes, limits: StructureLimits, name: str) -> Structure:
    found = Structure("TIFF")
    order = "<" if data[:2] == b"II" else ">"
    size = len(data)
    (offset,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    while 8 <= offset < size - 2 and offset not in seen:  # the chain of pages (IFDs); a loop ends it
        seen.add(offset)
        found.frames += 1
        if found.frames > limits.frames:
            raise too_complex(name, "TIFF", "pages", limits.frames, "SLOTCON_MAX_IMAGE_FRAMES")
        (entries,) = struct.unpack_from(order + "H", data, offset)
        found.chunks += entries
        if found.chunks > limits.chunks:
            raise too_complex(name, "TIFF", "tags", limits.chunks, "SLOTCON_MAX_IMAGE_CHUNKS")
        end = offset + 2 + 12 * entries
        if end + 4 > size:
            break
        (offset,) = struct.unpack_from(order + "I", data, end)
    return found
