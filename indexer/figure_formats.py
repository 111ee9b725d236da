"""Writers of a concept figure as PNG, PDF and SVG; each is byte-for-byte deterministic.

No date, host or library version goes into a file, so the same figure always gives the same bytes
(a figure can be checked into a paper's repository and diffed). PIL's own PDF writer stamps the time
and re-encodes the pixels as JPEG, which smears the mask edges, so the PDF here is written by hand: one
page holding the raster losslessly (Flate), 1 px = 1 pt. The SVG keeps every cell as an embedded PNG and
the row titles as real text, so they stay selectable and editable in a vector editor.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from PIL import Image

SUFFIXES = (".png", ".pdf", ".svg")


def png_bytes(img: Image.Image) -> bytes:
    """PNG bytes of the image, without any metadata chunk (deterministic)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # higher levels cost far more time for barely smaller files
    return buf.getvalue()


def pdf_bytes(img: Image.Image) -> bytes:
    """A one-page PDF 1.4 showing the RGB image at 1 px = 1 pt, pixels stored losslessly (FlateDecode)."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    pixels = zlib.compress(rgb.tobytes(), 6)
    content = f"q {w} 0 0 {h} 0 0 cm /Im0 Do Q\n".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Resources << /XObject << /Im0 4 0 R >> >> "
        f"/Contents 5 0 R >>".encode(),
        f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceRGB /BitsPerComponent 8 "
        f"/Filter /FlateDecode /Length {len(pixels)} >>\nstream\n".encode()
        + pixels
        + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@dataclass(frozen=True)
class SvgText:
    """A line of text at (x, y) (the baseline's left end), ``size`` px."""

    x: int
    y: int
    text: str
    size: int


@dataclass(frozen=True)
class SvgCell:
    """A raster cell at (x, y): an image, or None for an empty (grey) cell of ``w`` × ``h``."""

    x: int
    y: int
    w: int
    h: int
    image: Image.Image | None


def svg_bytes(
    size: tuple[int, int], cells: Sequence[SvgCell], texts: Sequence[SvgText], background: str, empty: str
) -> bytes:
    """An SVG of ``size`` (w, h) px: a background, the cells as embedded PNGs (grey rectangles when
    empty) and the texts."""
    w, h = size
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" '
        f'height="{h}" viewBox="0 0 {w} {h}">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="{background}"/>',
    ]
    for c in cells:
        if c.image is None:
            parts.append(f'<rect x="{c.x}" y="{c.y}" width="{c.w}" height="{c.h}" fill="{empty}"/>')
            continue
        data = base64.b64encode(png_bytes(c.image)).decode("ascii")
        parts.append(
            f'<image x="{c.x}" y="{c.y}" width="{c.w}" height="{c.h}" xlink:href="data:image/png;base64,{data}"/>'
        )
    for t in texts:
        parts.append(
            f'<text x="{t.x}" y="{t.y}" font-family="sans-serif" font-size="{t.size}" '
            f'fill="black">{escape(t.text)}</text>'
        )
    parts.append("</svg>")
    return ("\n".join(parts) + "\n").encode("utf-8")
