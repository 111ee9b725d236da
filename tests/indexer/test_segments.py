"""Segments of an image: masks partition the crop box (or the whole image); pooled vectors and scores equal a
hand computation; a prototype's ranking equals the release's ``viz_slots.py`` ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from pycocotools import mask as mask_utils

from core.augment import eval_transform
from core.checkpoint import load_model
from core.datasets import find_images, load_rgb
from indexer.segments import ModelView, crop_box, model_input, resized_size, segment_images, segment_outputs
from indexer.store import ConceptIndex


@pytest.mark.parametrize("size", [(96, 96), (640, 480), (333, 500), (257, 256)])
def test_crop_box_matches_torchvision(size):
    w, h = size
    xs = torch.arange(w, dtype=torch.float32).expand(h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    coords = T.CenterCrop(224)(T.Resize(256, antialias=False)(torch.stack([xs, ys])))  # (2, 224, 224)
    x0, y0, bw, bh = crop_box(w, h, 256, 224)
    scale = min(w, h) / 256
    # the centre of crop pixel 0 sits half a resized pixel inside the box edge
    assert float(coords[0, 0, 0]) == pytest.approx(x0 + 0.5 * scale - 0.5, abs=1.0)
    assert float(coords[1, 0, 0]) == pytest.approx(y0 + 0.5 * scale - 0.5, abs=1.0)
    assert float(coords[0, 0, -1]) == pytest.approx(x0 + bw - 0.5 * scale - 0.5, abs=1.0)
    assert float(coords[1, -1, 0]) == pytest.approx(y0 + bh - 0.5 * scale - 0.5, abs=1.0)
    assert x0 >= 0 and y0 >= 0 and x0 + bw <= w and y0 + bh <= h


def test_masks_partition_each_image(tiny_index):
    with ConceptIndex.open(tiny_index) as index:
        for image in index.images(0, 100):
            segs = index.image_segments(image.id)
            assert segs and len(segs) == image.num_segments
            masks = np.stack([mask_utils.decode(s.rle) for s in segs])  # (S, H, W)
            assert masks.shape[1:] == (image.height, image.width)
            cover = masks.sum(0)
            x, y, w, h = image.crop_box
            assert (cover[y : y + h, x : x + w] == 1).all()
            assert cover.sum() == w * h  # nothing outside the crop box
            for s, m in zip(segs, masks, strict=True):
                assert s.area == m.sum() > 0
                ys, xs = np.nonzero(m)
                assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_pooled_vectors_equal_hand_computation(tiny_index, tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    protos = model.grouping_k.slot_embed.weight.detach().numpy()
    protos = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    with ConceptIndex.open(tiny_index) as index:
        for image_id in (0, 5):
            image = index.image(image_id)
            x = eval_transform(256, 224)(load_rgb(image.path))[None]
            with torch.no_grad():
                z = model.teacher_project(x)[0].numpy()  # (D, h, w)
            z = z / np.linalg.norm(z, axis=0, keepdims=True)
            cos = np.einsum("dhw,kd->khw", z, protos)
            labels = cos.argmax(0)
            segs = index.image_segments(image_id)
            assert [s.prototype for s in segs] == sorted(np.unique(labels).tolist())
            for s in segs:
                pix = z[:, labels == s.prototype]  # (D, n)
                v = pix.mean(1)
                v /= np.linalg.norm(v)
                assert s.feature_area == pix.shape[1]
                np.testing.assert_allclose(index.segment_vector(s.id), v, atol=1e-5)  # FAISS: normalised mean
                assert s.score == pytest.approx(float(cos[s.prototype][labels == s.prototype].mean()), abs=1e-5)


def _release_ranking(model, paths) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's ``prepare_knn``, restated: per-pixel cosines of the teacher's normalised projections to the
    normalised prototypes, a one-hot argmax mask plus 1e-6, and the masked mean. Returns (scores (N, K),
    present (N, K))."""
    x = torch.stack([eval_transform(256, 224)(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        bank = torch.nn.functional.normalize(model.projector_k(model.encoder_k(x)), dim=1)  # (N, D, h, w)
        prototypes = torch.nn.functional.normalize(model.grouping_k.slot_embed.weight, dim=1)  # (K, D)
        dots = torch.einsum("kd,ndhw->nkhw", prototypes, bank)
        masks = torch.zeros_like(dots).scatter_(1, dots.argmax(1, keepdim=True), 1)
        adder = masks + 1e-6
        scores = (dots * adder).sum(-1).sum(-1) / adder.sum(-1).sum(-1)  # (N, K)
    return scores, masks.sum((-2, -1)) > 0


def test_top_segments_rank_as_the_release(tiny_index, tiny_checkpoint, synthetic_root):
    """Every prototype's ranking over its images equals the release's (images where it is absent left out)."""
    model = load_model(tiny_checkpoint)
    scores, present = _release_ranking(model, find_images(synthetic_root, "val2017"))
    ranked_some = 0
    with ConceptIndex.open(tiny_index) as index:
        for k in range(index.num_prototypes):
            ours = index.top_segments(k, 0, 1000)
            theirs = sorted(present[:, k].nonzero().flatten().tolist(), key=lambda n: -float(scores[n, k]))
            assert len(ours) == len(theirs), k
            for seg, n in zip(ours, theirs, strict=True):
                assert seg.score == pytest.approx(float(scores[seg.image_id, k]), abs=1e-4)
                assert seg.image_id == n or abs(seg.score - float(scores[n, k])) < 1e-4, (k, seg.image_id, n)
            ranked_some += len(ours) > 1
    assert ranked_some >= 2  # the check compared real rankings


def test_resized_size_matches_torchvision():
    for size in [(96, 96), (640, 480), (333, 500), (257, 256), (31, 500)]:
        resized = T.Resize(256)(Image.new("RGB", size))
        assert resized_size(*size, 256) == resized.size


def test_whole_image_view_assigns_every_pixel(tiny_checkpoint, synthetic_root):
    """No crop: the input is the whole image with its shorter side resized; the masks cover every pixel."""
    img = load_rgb(find_images(synthetic_root, "val2017")[0]).resize((150, 96))
    x, view = model_input(img, 128, None)
    assert view == ModelView((150, 96), (0, 0, 150, 96), (128, 200)) and view.whole
    assert tuple(x.shape) == (3, 128, 200)
    seg = segment_images(load_model(tiny_checkpoint), [img], 128, None)[0]
    masks = np.stack([mask_utils.decode({"size": [96, 150], "counts": r}) for r in seg.rles])
    assert (masks.sum(0) == 1).all()
    assert seg.box_labels.shape == (96, 150) and set(np.unique(seg.box_labels)) == set(seg.prototypes.tolist())
    cropped = segment_images(load_model(tiny_checkpoint), [img], 128, 112)[0]
    assert cropped.view.box == crop_box(150, 96, 128, 112) and not cropped.view.whole
    assert cropped.areas.sum() == cropped.view.box[2] * cropped.view.box[3] < 150 * 96


def test_segment_image_label_counts():
    torch.manual_seed(0)
    k, d, h, w = 4, 6, 3, 3
    z = torch.nn.functional.normalize(torch.randn(d, h, w), dim=0)
    protos = torch.randn(k, d)
    scores = torch.einsum("dhw,kd->khw", z, torch.nn.functional.normalize(protos, dim=1))
    label = np.full((12, 12), 255, np.uint8)
    label[:, :6] = 0
    label[:, 6:] = 1
    seg = segment_outputs(z, scores, protos, ModelView((12, 12), (0, 0, 12, 12), (12, 12)), label, num_classes=2)
    assert seg.label_counts.sum() == 144
    assert seg.areas.sum() == 144
    decoded = [mask_utils.decode({"size": [12, 12], "counts": r}) for r in seg.rles]
    for m, counts in zip(decoded, seg.label_counts, strict=True):
        assert counts.tolist() == [int(m[:, :6].sum()), int(m[:, 6:].sum())]


def test_label_map_rles_equal_pycocotools_on_the_mask_stack() -> None:
    """encode_label_map (runs read off the label map) writes byte for byte the RLEs pycocotools writes for the
    (height, width, n) stack of masks: random and blocky maps, boxes anywhere (touching every edge, the whole
    image, one pixel), labels absent from the map (empty masks)."""
    from pycocotools import mask as mask_utils

    from indexer.segments import encode_label_map

    rng = np.random.default_rng(0)
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        n = int(rng.integers(1, 6))
        if trial % 3 == 0:
            local = rng.integers(0, n, (bh, bw))
        else:  # blocks of 7 px, as nearest-resized feature cells are
            cells = rng.integers(0, n, (bh // 7 + 1, bw // 7 + 1))
            local = np.repeat(np.repeat(cells, 7, 0), 7, 1)[:bh, :bw]
        stack = np.zeros((h, w, n), dtype=np.uint8, order="F")
        stack[y0 : y0 + bh, x0 : x0 + bw] = local[..., None] == np.arange(n)
        want = mask_utils.encode(stack)
        got = encode_label_map(local, (x0, y0), (h, w), n)
        assert [(g["counts"], list(g["size"])) for g in got] == [(e["counts"], list(e["size"])) for e in want]
