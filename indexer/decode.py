"""JPEG decoding at reduced size when the model input allows it (PIL ``draft``).

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size by skipping DCT coefficients, which costs a fraction
of a full decode. The index resizes every image's shorter side to ``resize`` anyway, so decoding a large
photo at full size only to shrink it wastes most of the decode.

The rule (:func:`draft_request`): ask PIL for the size the resize will produce,
``resized_size(W, H, resize)`` = (w_t, h_t). PIL then picks the largest scale s in {8, 4, 2, 1} with
``s <= min(W // w_t, H // h_t)`` and decodes ``(ceil(W / s), ceil(H / s))``, which is >= (w_t, h_t) on both
sides: the resize that follows still only shrinks, never enlarges. So an image is reduced only when it is at
least twice the target on both sides (a COCO 640×480 at resize 256 is decoded at full size: 480 // 256 = 1);
a 4032×3024 phone photo is decoded at 1/8 (504×378) for a 256 target.

The pixels differ slightly from a full decode followed by the same resize (the DCT scaling is its own
low-pass filter), so it is an option (``IndexConfig.jpeg_draft``, ``--jpeg-draft``), off by default.
"""

from __future__ import annotations

import os

from PIL import Image

from core.datasets import ImageReadError, to_rgb
from indexer.segments import resized_size


def draft_request(width: int, height: int, resize: int) -> tuple[int, int]:
    """The size to pass to ``Image.draft`` for a shorter-side ``resize`` target (see the module doc)."""
    return resized_size(width, height, resize)


def load_rgb_reduced(path: str | os.PathLike, resize: int) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image decoded at the smallest JPEG scale whose shorter side stays >= ``resize``, the file's
    full (width, height)). Non-JPEG files decode at full size. Stored pixel frame (no EXIF orientation), as
    :func:`core.datasets.load_rgb` with ``upright=False``. Raises :class:`ImageReadError` naming the file."""
    try:
        with Image.open(path) as img:
            full = img.size
            if img.format == "JPEG":
                img.draft(None, draft_request(*full, resize))
            img.load()
            return to_rgb(img), full
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
