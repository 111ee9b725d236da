"""server.services.render on real images: the palette against colorsys, blends against the alpha formula
computed here pixel by pixel, crops and outlines at known coordinates, label-map PNGs decoded back, and
thumbnails' sizes."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.services import render


def _image(w: int = 12, h: int = 8, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), mode="RGB")


def _blend(pixels: np.ndarray, color: tuple[int, int, int], alpha: float) -> np.ndarray:
    return pixels.astype(np.float64) * (1 - alpha) + np.array(color, np.float64) * alpha


# ---------------------------------------------------------------- palette
def test_palette_is_the_stated_hsv_walk() -> None:
    table = render.palette()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    for i in range(256):
        h = (0.13 + i * 0.618033988749895) % 1.0
        s = [0.85, 0.6, 0.95, 0.7][(i // 3) % 4]
        v = [0.95, 0.75, 0.88, 0.62][(i // 5) % 4]
        want = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
        assert np.abs(table[i].astype(int) - want).max() <= 1, i


def test_palette_is_stable_and_grows_past_256() -> None:
    small, big = render.palette(3), render.palette(300)
    assert small.shape == (256, 3) and big.shape == (300, 3)
    np.testing.assert_array_equal(big[:256], small)  # prototype k keeps its colour
    assert len({tuple(c) for c in small}) == 256  # 256 distinct colours
    assert render.color_of(0) == tuple(int(c) for c in small[0])
    assert render.color_of(299) == tuple(int(c) for c in big[299])
    assert all(isinstance(c, int) for c in render.color_of(5))


# ---------------------------------------------------------------- regions
def test_outline_box_draws_two_rings_just_outside_the_box() -> None:
    img = _image(20, 16)
    px = np.array(img)
    out = render.outline_box(img, (5, 4, 6, 5))
    assert out is not img and np.array_equal(np.array(img), px)  # a copy; the input untouched
    o = np.array(out)
    np.testing.assert_array_equal(o[4:9, 5:11], px[4:9, 5:11])  # no pixel of the box painted over
    assert (o[3, 4:12] == render.BOX_COLOR).all() and (o[9, 4:12] == render.BOX_COLOR).all()  # light ring
    assert (o[3:10, 4] == render.BOX_COLOR).all() and (o[3:10, 11] == render.BOX_COLOR).all()
    assert (o[2, 3:13] == 0).all() and (o[10, 3:13] == 0).all()  # dark ring outside it
    assert (o[2:11, 3] == 0).all() and (o[2:11, 12] == 0).all()
    # nothing else changed
    changed = (o != px).any(axis=2)
    ring = np.zeros_like(changed)
    ring[2:11, 3:13] = True
    ring[4:9, 5:11] = False
    assert not (changed & ~ring).any()


def test_outline_box_of_the_whole_image_is_the_image() -> None:
    img = _image()
    assert render.outline_box(img, (0, 0, img.width, img.height)) is img


def test_outline_box_at_the_border_is_clipped() -> None:
    img = _image(10, 10)
    o = np.array(render.outline_box(img, [0, 0, 5, 10], color=(1, 2, 3)))
    assert (o[:, 5] == (1, 2, 3)).all() and (o[:, 6] == 0).all()
    np.testing.assert_array_equal(o[:, :5], np.array(img)[:, :5])


def test_show_region_crop_and_full() -> None:
    img = _image(20, 16)
    crop = render.show_region(img, (3, 2, 10, 7), "crop")
    assert crop.size == (10, 7)
    np.testing.assert_array_equal(np.array(crop), np.array(img)[2:9, 3:13])
    full = render.show_region(img, [3, 2, 10, 7], "full")
    np.testing.assert_array_equal(np.array(full), np.array(render.outline_box(img, (3, 2, 10, 7))))
    whole = (0, 0, 20, 16)
    assert render.show_region(img, whole, "crop") is img and render.show_region(img, whole, "full") is img


def test_show_region_refuses_an_unknown_view() -> None:
    with pytest.raises(ValueError, match="crop, full"):
        render.show_region(_image(), (0, 0, 1, 1), "zoom")


# ---------------------------------------------------------------- overlays
def test_overlay_mask_tints_only_the_mask() -> None:
    img = _image(12, 8)
    mask = np.zeros((8, 12), bool)
    mask[2:5, 3:9] = True
    out = np.array(render.overlay_mask(img, mask))
    px = np.array(img)
    np.testing.assert_array_equal(out[~mask], px[~mask])
    want = _blend(px[mask], render.FIGURE3_COLOR, render.FIGURE3_ALPHA)
    assert np.abs(out[mask].astype(np.float64) - want).max() <= 1.0


def test_overlay_mask_resizes_a_smaller_mask_by_nearest_neighbour() -> None:
    img = _image(8, 8)
    small = np.array([[True, False], [False, True]])  # quadrants: top-left and bottom-right
    out = np.array(render.overlay_mask(img, small, color=(0, 255, 0), alpha=1.0))
    big = np.kron(small, np.ones((4, 4), bool)).astype(bool)
    assert (out[big] == (0, 255, 0)).all()
    np.testing.assert_array_equal(out[~big], np.array(img)[~big])


def test_overlay_mask_converts_grey_images_and_accepts_an_empty_mask() -> None:
    grey = _image().convert("L")
    out = render.overlay_mask(grey, np.zeros((8, 12), bool))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.array(out), np.array(grey.convert("RGB")))


def test_overlay_labels_colours_each_prototype_and_leaves_unassigned_pixels() -> None:
    img = _image(12, 8)
    labels = np.full((8, 12), -1)
    labels[:, :4] = 0
    labels[:4, 4:8] = 3
    labels[6:, 8:] = 300  # above 255: the palette grows
    out = np.array(render.overlay_labels(img, labels))
    px = np.array(img)
    np.testing.assert_array_equal(out[labels < 0], px[labels < 0])
    for k in (0, 3, 300):
        sel = labels == k
        want = _blend(px[sel], render.color_of(k), render.SLOTS_ALPHA)
        assert np.abs(out[sel].astype(np.float64) - want).max() <= 1.0, k


def test_overlay_labels_without_any_prototype_is_the_image() -> None:
    img = _image().convert("RGBA")
    out = render.overlay_labels(img, np.full((8, 12), -1))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.array(out), np.array(img.convert("RGB")))


def test_overlay_labels_at_feature_resolution_is_upsampled() -> None:
    img = _image(8, 8)
    labels = np.array([[1, 2], [2, 1]])
    out = np.array(render.overlay_labels(img, labels, alpha=1.0))
    assert (out[:4, :4] == render.color_of(1)).all() and (out[:4, 4:] == render.color_of(2)).all()


# ---------------------------------------------------------------- encodings
def test_labels_image_pixel_values_are_the_ids() -> None:
    labels = np.array([[0, 1, 2], [7, 255, 3]])
    img = render.labels_image(labels)
    assert img.mode == "P"
    back = Image.open(io.BytesIO(render.to_png(img)))
    assert back.mode == "P"
    np.testing.assert_array_equal(np.array(back), labels)
    pal = np.array(back.getpalette()[: 256 * 3], dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(pal, render.palette())


def test_labels_image_past_256_ids_is_rgb_in_palette_colours() -> None:
    labels = np.array([[0, 256], [300, 5]])
    img = render.labels_image(labels)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.array(img), render.palette(301)[labels])


def test_thumbnail_sizes() -> None:
    img = _image(200, 100)
    assert render.thumbnail(img, None) is img
    assert render.thumbnail(img, 200) is img and render.thumbnail(img, 500) is img
    small = render.thumbnail(img, 64)
    assert small.size == (64, 32) and img.size == (200, 100)
    assert render.thumbnail(_image(30, 90), 45).size == (15, 45)


def test_png_and_jpeg_round_trip(synthetic_root: Path) -> None:
    img = Image.open(sorted((synthetic_root / "val2017").glob("*.jpg"))[0]).convert("RGB")
    png = render.to_png(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(png))), np.array(img))  # lossless
    jpg = render.to_jpeg(img.convert("RGBA"))  # alpha dropped, not an error
    assert jpg[:3] == b"\xff\xd8\xff"
    back = Image.open(io.BytesIO(jpg))
    assert back.mode == "RGB" and back.size == img.size
    assert np.abs(np.array(back).astype(int) - np.array(img)).mean() < 8  # lossy but close
    assert len(render.to_jpeg(img, quality=20)) < len(render.to_jpeg(img, quality=95))
