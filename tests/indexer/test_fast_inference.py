"""Index builds and evaluations on the inference model equal the plain full model's; reduced-size
JPEG decoding keeps the index in file pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.synthetic import generate
from indexer.__main__ import get_args_parser as index_parser
from indexer.build import build_index
from indexer.decode import draft_request, load_rgb_reduced
from indexer.eval_cli import get_args_parser as eval_parser
from indexer.evaluate import EvalConfig, run_eval
from indexer.segments import label_map
from indexer.store import ConceptIndex


def _segments(index_dir: Path) -> tuple[list[tuple], np.ndarray, np.ndarray, list[tuple]]:
    with ConceptIndex.open(index_dir) as ix:
        segs = [ix.segment(i) for i in range(ix.num_segments)]
        keys = [(s.image_id, s.prototype, s.area, s.bbox, s.rle["counts"]) for s in segs]
        vectors = np.stack([ix.segment_vector(i) for i in range(ix.num_segments)])
        images = [(i.id, i.file_name, i.width, i.height, i.crop_box) for i in ix.images(0, 10**6)]
        return keys, np.array([s.score for s in segs]), vectors, images


def test_fused_and_plain_builds_give_identical_assignments(trained_checkpoint, synthetic_root, tmp_path) -> None:
    fused = build_index(trained_checkpoint, synthetic_root, tmp_path / "fused", batch_size=4)
    plain = build_index(trained_checkpoint, synthetic_root, tmp_path / "plain", batch_size=4, fused=False)
    keys_f, scores_f, vec_f, images_f = _segments(fused)
    keys_p, scores_p, vec_p, images_p = _segments(plain)
    assert len(keys_p) > len(images_p)  # several segments per image: the assignments are not trivial
    assert keys_f == keys_p and images_f == images_p  # same prototypes, masks, areas, boxes
    np.testing.assert_allclose(scores_f, scores_p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(vec_f, vec_p, atol=1e-4, rtol=0)
    with ConceptIndex.open(fused) as f, ConceptIndex.open(plain) as p:  # the encoder space agrees too
        enc_f = np.stack([f.segment_vector(i, "encoder") for i in range(f.num_segments)])
        enc_p = np.stack([p.segment_vector(i, "encoder") for i in range(p.num_segments)])
        assert (f.manifest.inference, p.manifest.inference) == ("fused fold_bn channels_last early_chunk fp32", "plain")
    np.testing.assert_allclose(enc_f, enc_p, atol=1e-4, rtol=0)


def test_fused_and_plain_evaluations_agree(trained_checkpoint, synthetic_root) -> None:
    cfg = dict(checkpoint=trained_checkpoint, data_root=synthetic_root, protocol="synthetic", resolution=64,
               limit=6, batch_size=3)  # fmt: skip
    fused, plain = run_eval(EvalConfig(**cfg)), run_eval(EvalConfig(**cfg, fused=False))
    assert fused.to_dict()["confusion"] == plain.to_dict()["confusion"]
    assert fused.miou == plain.miou
    rand_f = run_eval(EvalConfig(**cfg, baseline="random-init"))
    rand_p = run_eval(EvalConfig(**cfg, baseline="random-init", fused=False))
    assert rand_f.to_dict()["confusion"] == rand_p.to_dict()["confusion"]


def test_the_clis_choose_the_plain_path() -> None:
    base = ["--checkpoint", "c.pth", "--data", "d"]
    assert index_parser().parse_args([*base, "--out", "o", "--plain-inference", "--jpeg-draft"]).plain_inference
    assert not index_parser().parse_args([*base, "--out", "o"]).jpeg_draft
    assert eval_parser().parse_args([*base, "--protocol", "synthetic", "--plain-inference"]).plain_inference


@pytest.mark.parametrize(("size", "resize", "decoded"), [
    ((640, 480), 256, (640, 480)),    # COCO-sized at the index's 256: 480 // 256 = 1, no reduction
    ((1024, 768), 256, (512, 384)),   # 768 // 256 = 3 → scale 1/2
    ((4032, 3024), 256, (504, 378)),  # a phone photo → 1/8
    ((4032, 3024), 320, (504, 378)),  # at 320: 3024 // 320 = 9 → 1/8, and 378 >= 320 still
])  # fmt: skip
def test_draft_keeps_the_shorter_side_at_least_the_target(tmp_path, size, resize, decoded) -> None:
    path = tmp_path / "a.jpg"
    Image.new("RGB", size, (120, 60, 30)).save(path, quality=90)
    img, full = load_rgb_reduced(path, resize)
    assert full == size
    want = draft_request(*size, resize)
    assert img.size[0] >= want[0] and img.size[1] >= want[1] and min(img.size) >= resize
    assert img.size == decoded


def test_draft_index_stays_in_file_pixels(trained_checkpoint, tmp_path) -> None:
    """160 px JPEGs indexed at resize 64: decoded at 80 px. Sizes, crop boxes, masks and label purity are in
    the file's pixels as without draft, and the segment maps agree on most pixels."""
    root = tmp_path / "data"
    generate(root, num_train=0, num_val=6, size=160, seed=3)
    kw = dict(split="val2017", resize=64, crop=56, batch_size=3)
    full = build_index(trained_checkpoint, root, tmp_path / "full", **kw)
    draft = build_index(trained_checkpoint, root, tmp_path / "draft", jpeg_draft=True, **kw)
    agree = []
    with ConceptIndex.open(full) as a, ConceptIndex.open(draft) as b:
        assert [(i.width, i.height, i.crop_box) for i in a.images(0, 100)] == \
            [(i.width, i.height, i.crop_box) for i in b.images(0, 100)]  # fmt: skip
        assert all((i.width, i.height) == (160, 160) for i in b.images(0, 100))
        for img in a.images(0, 100):
            ma = label_map(a.image_segments(img.id), img.height, img.width)
            mb = label_map(b.image_segments(img.id), img.height, img.width)
            assert (mb >= 0).sum() == (ma >= 0).sum()  # the masks tile the same crop box
            agree.append(float((ma == mb)[ma >= 0].mean()))
        assert sum(p.num_segments for p in b.prototypes()) == b.num_segments
        assert b.stats().to_dict()["per_prototype"]  # label purity computed from full-size label maps
    assert np.mean(agree) > 0.8, agree


@pytest.mark.cxx
def test_auto_compile_follows_the_time_left(trained_checkpoint, synthetic_root, tmp_path, monkeypatch) -> None:
    """``compile=None`` compiles after the first batch only when the rest would take longer than the payback
    time; the compiled build stores the eager build's segments."""
    import core.infer_model

    eager = build_index(trained_checkpoint, synthetic_root, tmp_path / "eager", batch_size=4)  # 12 images: fast
    monkeypatch.setattr(core.infer_model, "COMPILE_PAYBACK_S", 0.0)
    compiled = build_index(trained_checkpoint, synthetic_root, tmp_path / "compiled", batch_size=5)  # 5, 5, 2
    with ConceptIndex.open(eager) as e, ConceptIndex.open(compiled) as c:
        assert (e.manifest.inference, c.manifest.inference) == (
            "fused fold_bn channels_last early_chunk fp32",
            "fused fold_bn channels_last early_chunk compile fp32",
        )
    keys_e, scores_e, vec_e, images_e = _segments(eager)
    keys_c, scores_c, vec_c, images_c = _segments(compiled)
    assert keys_c == keys_e and images_c == images_e
    np.testing.assert_allclose(scores_c, scores_e, atol=1e-4, rtol=0)
    np.testing.assert_allclose(vec_c, vec_e, atol=1e-4, rtol=0)


@pytest.mark.cxx
def test_compiled_evaluation_equals_eager(trained_checkpoint, synthetic_root, monkeypatch, caplog) -> None:
    """The evaluation's auto rule compiles after the first batch (payback time 0 here) and scores the same."""
    import logging

    import core.infer_model

    cfg = dict(checkpoint=trained_checkpoint, data_root=synthetic_root, protocol="synthetic", resolution=64,
               limit=7, batch_size=3)  # fmt: skip
    eager = run_eval(EvalConfig(**cfg, compile=False))
    monkeypatch.setattr(core.infer_model, "COMPILE_PAYBACK_S", 0.0)
    with caplog.at_level(logging.INFO, logger="core.infer_model"):
        compiled = run_eval(EvalConfig(**cfg))  # 3 eager, then 3 and a padded 1 compiled
    assert "compiling the model" in caplog.text and "torch.compile failed" not in caplog.text
    assert compiled.to_dict()["confusion"] == eager.to_dict()["confusion"]
    assert compiled.miou == eager.miou
