"""Inference helpers: scores, resized assignments, segments and pooled vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.inference import active_prototypes, assign, image_segments, prototype_scores, teacher_outputs


def test_prototype_scores_are_teacher_cosines_in_eval_mode(make_tiny_model) -> None:
    model = make_tiny_model()
    model.train()
    x = torch.randn(2, 3, 64, 64)
    scores = prototype_scores(model, x)
    assert model.training  # mode restored
    assert scores.shape == (2, 8, 4, 4)
    assert scores.abs().max() <= 1.0 + 1e-5
    model.eval()
    with torch.no_grad():
        z = model.projector_k(model.encoder_k(x))
        protos = F.normalize(model.grouping_k.slot_embed.weight, dim=1)
        ref = torch.einsum("kd,bdhw->bkhw", protos, F.normalize(z, dim=1))
    torch.testing.assert_close(scores, ref)


def test_assign_resizes_scores_not_labels() -> None:
    scores = torch.zeros(1, 2, 2, 2)
    scores[0, 0, :, 0] = 1.0  # left column → prototype 0
    scores[0, 1, :, 1] = 1.0  # right column → prototype 1
    labels = assign(scores, (4, 8))
    assert labels.shape == (1, 4, 8)
    assert labels[0, :, :4].eq(0).all() and labels[0, :, 4:].eq(1).all()


def test_image_segments_pool_hand_computed() -> None:
    z = F.normalize(torch.randn(4, 2, 3), dim=0)  # (D, h, w)
    labels = torch.tensor([[2, 2, 0], [0, 2, 2]])
    protos = torch.randn(5, 4)
    seg = image_segments(z, labels, protos)
    assert seg.prototypes.tolist() == [0, 2] and seg.areas.tolist() == [2, 4]
    mean0 = (z[:, 0, 2] + z[:, 1, 0]) / 2
    torch.testing.assert_close(seg.vectors[0], F.normalize(mean0, dim=0))
    # the release's score: the mean of the pixels' cosines, ŝ_k · mean(ẑ) with the mean not re-normalised
    pix2 = torch.stack([z[:, 0, 0], z[:, 0, 1], z[:, 1, 1], z[:, 1, 2]], dim=1)  # (D, 4)
    cosines = F.normalize(protos[2], dim=0) @ pix2  # (4,)
    torch.testing.assert_close(seg.scores[1], cosines.mean())


def test_segment_score_ranks_as_the_release() -> None:
    """Two segments of prototype 0 in two images: A's pixels agree at 45° from the prototype, B's two pixels
    straddle it at ±60°. Re-normalising the mean would rank B first (its mean points at the prototype: cos 1);
    the release's score (mean cosine: cos 45° > cos 60°) ranks A first."""
    proto = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (K=2, D=3)
    c45, s45, c60, s60 = 0.5**0.5, 0.5**0.5, 0.5, 0.75**0.5
    a = torch.tensor([[c45, c45], [s45, s45], [0.0, 0.0]]).view(3, 1, 2)  # (D, h, w)
    b = torch.tensor([[c60, c60], [s60, -s60], [0.0, 0.0]]).view(3, 1, 2)
    labels = torch.zeros(1, 2, dtype=torch.long)
    sa, sb = image_segments(a, labels, proto), image_segments(b, labels, proto)
    assert float(sa.scores[0]) == pytest.approx(c45, abs=1e-6)
    assert float(sb.scores[0]) == pytest.approx(c60, abs=1e-6)
    assert float(sa.scores[0]) > float(sb.scores[0])
    assert float(sb.vectors[0] @ proto[0]) == pytest.approx(1.0, abs=1e-6)  # the re-normalised cosine would win
    torch.testing.assert_close(sb.vectors[0].norm(), torch.tensor(1.0))  # the FAISS vector stays normalised


def test_active_prototypes_and_teacher_outputs(make_tiny_model) -> None:
    z, scores = teacher_outputs(make_tiny_model(), torch.randn(3, 3, 64, 64))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3, 4, 4))
    act = active_prototypes(scores)
    assert act.shape == (3, 8) and act.sum(1).ge(1).all()
