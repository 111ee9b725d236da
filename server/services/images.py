"""Dataset images for the routes: decoded once (an LRU of at most :data:`CACHE_BYTES`), then rendered as
JPEG/PNG answers."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from PIL import Image

from core.datasets import ImageReadError, load_rgb
from indexer.segments import decode_rle, label_map
from server.errors import ApiError, not_found
from server.runtime import LoadedIndex
from server.services import render

#: Bytes of decoded images kept (an LRU bounded by size, not count: 128 COCO images, or one 40 MP image
#: not at all; a count bound would hold 15 GB of such images after a burst).
CACHE_BYTES = 96 << 20
_ORIENTATION = 0x0112  # the EXIF orientation tag
_cache: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
_cached_bytes = 0
_lock = threading.Lock()


def _nbytes(img: Image.Image) -> int:
    return img.width * img.height * len(img.getbands())


def image_record(loaded: LoadedIndex, image_id: int):
    """The index's ``ImageRecord``, or 404."""
    try:
        return loaded.index.image(image_id)
    except KeyError:
        raise not_found("image", image_id) from None


def dataset_image(loaded: LoadedIndex, image_id: int) -> Image.Image:
    """The decoded RGB image in its stored pixel frame (no EXIF orientation), the frame its masks were
    indexed in; 404 unknown id, 500 ``image_unreadable``."""
    key = (str(loaded.path), int(image_id))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    rec = image_record(loaded, image_id)
    try:
        img = load_rgb(rec.path, upright=False)
    except ImageReadError as e:
        raise ApiError(
            500, "image_unreadable", f"image {image_id} ({rec.file_name}) cannot be read: {e.reason or e}"
        ) from e
    global _cached_bytes
    size = _nbytes(img)
    if size > CACHE_BYTES // 4:
        return img  # one image would push out most others: decoded per request instead
    with _lock:
        if key not in _cache:
            _cache[key] = img
            _cached_bytes += size
        while _cached_bytes > CACHE_BYTES:
            _, old = _cache.popitem(last=False)
            _cached_bytes -= _nbytes(old)
    return img


def _region(loaded: LoadedIndex, image_id: int, img: Image.Image) -> tuple[int, int, int, int]:
    """The (x, y, w, h) region of the image that the model saw when indexing (the whole image if unknown)."""
    box = tuple(int(v) for v in image_record(loaded, image_id).crop_box)
    return box if box[2] > 0 and box[3] > 0 else (0, 0, img.width, img.height)  # type: ignore[return-value]


def segment_overlay(
    loaded: LoadedIndex,
    image_id: int,
    prototype: int | None,
    segment: int | None,
    size: int | None,
    view: str = "crop",
) -> bytes:
    """PNG of the image with one segment (by id, or the image's segment of ``prototype``) in Figure-3 red.

    ``view``: ``crop`` shows the region the model saw (the release's figures), ``full`` the whole image
    with that region outlined (:func:`server.services.render.show_region`).
    """
    if (prototype is None) == (segment is None):
        raise ApiError(422, "invalid_request", "give exactly one of ?prototype=k or ?segment=id")
    index = loaded.index
    if segment is not None:
        try:
            seg = index.segment(segment)
        except KeyError:
            raise not_found("segment", segment) from None
        if seg.image_id != image_id:
            raise ApiError(
                422, "invalid_request", f"segment {segment} belongs to image {seg.image_id}, not to image {image_id}"
            )
    else:
        if prototype >= index.num_prototypes:
            raise not_found("prototype", prototype)
        try:
            segs = [s for s in index.image_segments(image_id) if s.prototype == prototype]
        except KeyError:
            raise not_found("image", image_id) from None
        if not segs:
            raise ApiError(404, "not_found", f"prototype {prototype} is not active on image {image_id}")
        seg = segs[0]
    img = dataset_image(loaded, image_id)
    out = render.overlay_mask(img, decode_rle(seg.rle))
    out = render.show_region(out, _region(loaded, image_id, img), view)
    return render.to_png(render.thumbnail(out, size))


def slots_overlay(loaded: LoadedIndex, image_id: int, size: int | None, view: str = "crop") -> bytes:
    """PNG of the image with all its slots, each in its prototype's palette colour (``view`` as in
    :func:`segment_overlay`)."""
    try:
        segs = loaded.index.image_segments(image_id)
    except KeyError:
        raise not_found("image", image_id) from None
    img = dataset_image(loaded, image_id)
    labels = label_map(segs, img.height, img.width)
    out = render.show_region(render.overlay_labels(img, labels), _region(loaded, image_id, img), view)
    return render.to_png(render.thumbnail(out, size))


def _exif_oriented(data: bytes) -> bool:
    """True when JPEG bytes carry an EXIF orientation other than 1 (a browser would rotate them)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.getexif().get(_ORIENTATION, 1)) != 1
    except Exception:  # noqa: BLE001 - unreadable: the decoder below reports it
        return True


def image_jpeg(loaded: LoadedIndex, image_id: int, size: int | None) -> bytes:
    """JPEG of the image in its stored frame (the original file's bytes when it is a JPEG without an EXIF
    rotation and no size is asked; a browser would turn a rotated one away from its masks' frame)."""
    rec = image_record(loaded, image_id)
    if size is None and rec.path.suffix.lower() in (".jpg", ".jpeg"):
        try:
            data = rec.path.read_bytes()
            if not _exif_oriented(data):
                return data
        except OSError:
            pass
    return render.to_jpeg(render.thumbnail(dataset_image(loaded, image_id), size))
