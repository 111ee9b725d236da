"""Tests of core.datasets: layout detection, robust decoding, datasets, COCO / COCO-Stuff label paths."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.augment import TwoViewAugment, collate_two_views
from core.datasets import (
    ImageDataset,
    ImageReadError,
    TwoViewDataset,
    coco_annotation_path,
    detect_layout,
    find_images,
    load_rgb,
    load_semantic_label,
    semantic_label_path,
)


def _save(path: Path, mode: str = "RGB", size: tuple[int, int] = (20, 16), color=(10, 200, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


# ---------------------------------------------------------------- layouts


def test_coco_layout(tmp_path: Path) -> None:
    for name in ("000000000002.jpg", "000000000001.png"):
        _save(tmp_path / "val2017" / name)
    (tmp_path / "val2017" / "notes.txt").write_text("not an image")
    _save(tmp_path / "val2017" / "nested" / "ignored.jpg")  # COCO split folders are flat
    _save(tmp_path / "labels" / "val2017" / "000000000001.png", "L", color=3)
    assert detect_layout(tmp_path, "val2017") == "coco"
    assert [p.name for p in find_images(tmp_path, "val2017")] == ["000000000001.png", "000000000002.jpg"]


def test_imagenet_layout(tmp_path: Path) -> None:
    for cls in ("n02", "n01"):
        for i in range(2):
            _save(tmp_path / "train" / cls / f"img{i}.JPEG")
    assert detect_layout(tmp_path, "train") == "imagenet"
    paths = find_images(tmp_path, "train")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "train/n01/img0.JPEG",
        "train/n01/img1.JPEG",
        "train/n02/img0.JPEG",
        "train/n02/img1.JPEG",
    ]


def test_folder_layout_recursive_skips_labels(tmp_path: Path) -> None:
    _save(tmp_path / "b.jpg")
    _save(tmp_path / "x" / "y" / "a.png")
    _save(tmp_path / "annotations" / "not_an_image.png")
    _save(tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "m.png", "L", color=1)
    _save(tmp_path / ".cache" / "thumb.jpg")
    assert detect_layout(tmp_path) == "folder"
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["b.jpg", "x/y/a.png"]


def test_coco_root_without_split_uses_all_splits(tmp_path: Path) -> None:
    _save(tmp_path / "train2017" / "1.jpg")
    _save(tmp_path / "unlabeled2017" / "2.jpg")
    _save(tmp_path / "labels" / "train2017" / "1.png", "L", color=0)
    (tmp_path / "annotations").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["1.jpg", "2.jpg"]


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images(tmp_path / "nowhere")
    _save(tmp_path / "train2017" / "1.jpg")
    with pytest.raises(FileNotFoundError, match="val2017.*train2017"):
        find_images(tmp_path, "val2017")


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=r"(?s)val2017.*coco.*imagenet.*folder"):
        find_images(tmp_path, "val2017")


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "mode,color",
    [
        ("RGB", (1, 2, 3)),
        ("L", 77),
        ("1", 1),
        ("CMYK", (0, 0, 0, 0)),
        ("RGBA", (10, 20, 30, 255)),
        ("LA", (50, 255)),
        ("I;16", 65535),
    ],
)
def test_load_rgb_modes(tmp_path: Path, mode: str, color) -> None:
    ext = ".tiff" if mode == "CMYK" else ".png"
    img = load_rgb(_save(tmp_path / f"img{ext}", mode, color=color))
    assert img.mode == "RGB" and img.size == (20, 16)
    if mode == "I;16":
        assert img.getpixel((0, 0)) == (255, 255, 255)


def test_load_rgb_alpha_and_palette(tmp_path: Path) -> None:
    path = _save(tmp_path / "clear.png", "RGBA", color=(0, 0, 0, 0))
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)  # transparent composited on white
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert load_rgb(tmp_path / "pal.png").getpixel((0, 0)) == (200, 100, 50)


def test_load_rgb_keeps_the_stored_frame_unless_asked_upright(tmp_path: Path) -> None:
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 5, 10))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    stored = load_rgb(tmp_path / "rot.jpg")  # datasets: the frame of their annotations
    assert stored.size == (30, 10)
    r, g, b = stored.getpixel((2, 5))
    assert r > 200 and g < 60
    out = load_rgb(tmp_path / "rot.jpg", upright=True)  # uploads: as a viewer shows it
    assert out.size == (10, 30)
    r, g, b = out.getpixel((5, 2))  # the left strip is now on top
    assert r > 200 and g < 60


def test_load_rgb_file_object() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buf, format="PNG")
    buf.seek(0)
    assert load_rgb(buf).getpixel((0, 0)) == (9, 9, 9)


def test_unreadable_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageReadError, match="bad.jpg") as info:
        load_rgb(bad)
    assert isinstance(info.value, OSError) and info.value.path == str(bad)
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.path == str(bad) and str(clone) == str(info.value)


# ---------------------------------------------------------------- datasets


def test_image_dataset_strict_and_skipping(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good0 = _save(tmp_path / "0.png", color=(0, 0, 0))
    bad = tmp_path / "1.png"
    bad.write_bytes(b"\x89PNG broken")
    good2 = _save(tmp_path / "2.png", color=(255, 255, 255))
    strict = ImageDataset([good0, bad, good2], transform=np.asarray)
    arr, index = strict[0]
    assert index == 0 and arr.shape == (16, 20, 3)
    with pytest.raises(ImageReadError, match="1.png"):
        strict[1]
    lenient = ImageDataset([good0, bad, good2], skip_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="core.datasets"):
        img, index = lenient[1]
    assert index == 2 and img.getpixel((0, 0)) == (255, 255, 255)
    assert "1.png" in caplog.text
    with pytest.raises(ImageReadError):
        ImageDataset([bad], skip_unreadable=True)[0]


def test_two_view_dataset_batches_for_the_model(tmp_path: Path) -> None:
    paths = [_save(tmp_path / f"{i}.png", size=(48, 40), color=(i * 40, 0, 0)) for i in range(3)]
    ds = TwoViewDataset(paths, TwoViewAugment(size=24))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_two_views)
    crops, coords, flags = next(iter(loader))
    assert [c.shape for c in crops] == [(3, 3, 24, 24)] * 2
    assert [c.shape for c in coords] == [(3, 4)] * 2 and [f.dtype for f in flags] == [torch.bool] * 2


# ---------------------------------------------------------------- COCO / COCO-Stuff labels


def test_coco_paths(tmp_path: Path) -> None:
    path = tmp_path / "annotations" / "stuff_val2017.json"
    path.parent.mkdir()
    path.write_text("{}")
    assert coco_annotation_path(tmp_path, "val2017", "stuff") == path
    assert coco_annotation_path(tmp_path, "val2017", must_exist=False).name == "instances_val2017.json"
    with pytest.raises(FileNotFoundError, match="instances_val2017"):
        coco_annotation_path(tmp_path, "val2017")
    with pytest.raises(ValueError, match="instances, stuff"):
        coco_annotation_path(tmp_path, "val2017", "panoptic")


def test_semantic_label_paths_and_values(tmp_path: Path) -> None:
    stuffthing = tmp_path / "stuffthingmaps_trainval2017" / "val2017" / "000000000001.png"
    _save(stuffthing, "L", color=181)
    img = tmp_path / "val2017" / "000000000001.jpg"
    assert semantic_label_path(tmp_path, "val2017", img) == stuffthing
    synthetic = _save(tmp_path / "labels" / "val2017" / "000000000001.png", "L", color=255)
    assert semantic_label_path(tmp_path, "val2017", img) == synthetic  # synthetic layout first
    with pytest.raises(FileNotFoundError, match="000000000009"):
        semantic_label_path(tmp_path, "val2017", "000000000009.jpg")
    pal = Image.new("P", (5, 4), 7)
    pal.putpalette([255, 255, 255] * 256)  # a palette must not change the stored indices
    pal.save(tmp_path / "pal.png")
    label = load_semantic_label(tmp_path / "pal.png")
    assert label.dtype == np.uint8 and label.shape == (4, 5) and (label == 7).all()
    assert (load_semantic_label(stuffthing) == 181).all()


def test_loader_workers_only_take_spare_cores() -> None:
    """Inference jobs decode in the main process when the model's threads already fill the cores (a worker
    beside them only takes the convolutions' cycles); an explicit count always wins."""
    from core.datasets import available_cores, loader_workers

    threads, cores = torch.get_num_threads(), available_cores()
    try:
        torch.set_num_threads(cores)
        assert loader_workers(None, "cpu") == 0
        torch.set_num_threads(1)
        assert loader_workers(None, "cpu") == min(4, cores - 1)
        assert loader_workers(None, "cuda") == min(8, cores - 1)
        assert loader_workers(3, "cpu") == 3 and loader_workers(0, "cuda") == 0
        # two torchrun processes on this node share the cores
        assert loader_workers(None, "cpu", processes=2) == max(0, min(4, (cores - 2) // 2))
        assert loader_workers(None, "cuda", processes=2) == max(0, min(8, (cores - 2) // 2))
    finally:
        torch.set_num_threads(threads)
