"""Losses on hand-computed cases and against loop-based references."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.losses import batch_center, group_loss, presence_mask, slot_contrastive_loss


def test_group_loss_hand_computed() -> None:
    # one image, K=2, one pixel: student cosines (0.5, -0.5), teacher (0.2, 0.0), centre (0.1, -0.1)
    s = torch.tensor([0.5, -0.5]).view(1, 2, 1, 1)
    t = torch.tensor([0.2, 0.0]).view(1, 2, 1, 1)
    c = torch.tensor([[0.1, -0.1]])
    log_p = [0.5 / 0.1 - math.log(math.exp(5) + math.exp(-5)), -0.5 / 0.1 - math.log(math.exp(5) + math.exp(-5))]
    ta, tb = (0.2 - 0.1) / 0.07, (0.0 + 0.1) / 0.07
    q = [math.exp(ta) / (math.exp(ta) + math.exp(tb)), math.exp(tb) / (math.exp(ta) + math.exp(tb))]
    expected = -(q[0] * log_p[0] + q[1] * log_p[1])
    assert math.isclose(group_loss(s, t, c).item(), expected, rel_tol=1e-5)


def test_group_loss_is_pixel_mean() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    c = torch.randn(1, 4)
    per_pixel = []
    for b in range(2):
        for i in range(3):
            for j in range(3):
                q = F.softmax((t[b, :, i, j] - c[0]) / 0.07, 0)
                per_pixel.append(-(q * F.log_softmax(s[b, :, i, j] / 0.1, 0)).sum())
    torch.testing.assert_close(group_loss(s, t, c), torch.stack(per_pixel).mean())


def test_presence_mask() -> None:
    dots = torch.zeros(2, 3, 1, 2)
    dots[0, 1, 0, 0] = 1.0  # pixel 0 → prototype 1
    dots[0, 2, 0, 1] = 1.0  # pixel 1 → prototype 2
    dots[1, 0] = 1.0  # both pixels → prototype 0
    assert presence_mask(dots).tolist() == [[False, True, True], [True, False, False]]


def test_slot_loss_against_loop_reference() -> None:
    torch.manual_seed(0)
    b, k, d = 3, 5, 8
    qs, ks = torch.randn(b, k, d), torch.randn(b, k, d)
    sq, sk = torch.randn(b, k, 2, 2), torch.randn(b, k, 2, 2)
    proj = torch.randn(d, d)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return x @ proj

    got = slot_contrastive_loss(qs, ks, sq, sk, predictor, tau=0.2)
    mq, mk = presence_mask(sq), presence_mask(sk)
    keys = [(i, j) for i in range(b) for j in range(k) if mk[i, j]]
    key_vecs = torch.stack([F.normalize(ks[i, j], dim=0) for i, j in keys])
    losses = []
    for i in range(b):
        for j in range(k):
            if mq[i, j] and mk[i, j]:
                qv = F.normalize(predictor(qs[i, j][None])[0], dim=0)
                logits = key_vecs @ qv / 0.2
                losses.append(-F.log_softmax(logits, 0)[keys.index((i, j))])
    torch.testing.assert_close(got, torch.stack(losses).mean() * 0.4)


def test_slot_loss_gradient_reaches_student_only() -> None:
    torch.manual_seed(1)
    qs = torch.randn(2, 4, 6, requires_grad=True)
    ks = torch.randn(2, 4, 6, requires_grad=True)
    loss = slot_contrastive_loss(qs, ks, torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), lambda x: x)
    loss.backward()
    assert qs.grad is not None and qs.grad.abs().sum() > 0
    assert ks.grad is None or ks.grad.abs().sum() == 0  # keys are gathered without gradient


def test_batch_center_is_mean_over_all_pixels() -> None:
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    expected = torch.cat([a, b]).permute(0, 2, 3, 1).reshape(-1, 3).mean(0, keepdim=True)
    torch.testing.assert_close(batch_center(a, b), expected)


def test_slot_loss_without_shared_prototypes_is_zero_not_nan() -> None:
    """Student and teacher views with disjoint present prototypes: no query, a finite zero loss."""
    qs = torch.randn(2, 4, 6, requires_grad=True)
    sq, sk = torch.zeros(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)
    sq[:, 0] = 1.0  # student: prototype 0 everywhere
    sk[:, 1] = 1.0  # teacher: prototype 1 everywhere
    loss = slot_contrastive_loss(qs, torch.randn(2, 4, 6), sq, sk, lambda x: x)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(qs.grad).all()


def test_slot_loss_with_a_single_query_does_not_raise() -> None:
    """One shared prototype in one image: BatchNorm cannot normalise one row; the loss is a finite zero."""
    sq, sk = torch.zeros(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)
    sq[0, 2], sk[0, 2] = 1.0, 1.0  # image 0 shares prototype 2
    sq[1, 0], sk[1, 1] = 1.0, 1.0  # image 1 shares nothing
    predictor = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.BatchNorm1d(6))
    loss = slot_contrastive_loss(torch.randn(2, 4, 6), torch.randn(2, 4, 6), sq, sk, predictor)
    assert loss.item() == 0.0


def test_empty_slot_loss_still_reaches_every_predictor_parameter() -> None:
    """The zero loss depends on every predictor parameter (each gets a zero gradient), so DDP reduces the same
    buckets on a rank without queries as on the others."""
    from core.heads import SlotPredictor

    predictor = SlotPredictor(6, 12)
    sq, sk = torch.zeros(2, 4, 1, 1), torch.zeros(2, 4, 1, 1)
    sq[:, 0], sk[:, 1] = 1.0, 1.0
    loss = slot_contrastive_loss(torch.randn(2, 4, 6), torch.randn(2, 4, 6), sq, sk, predictor)
    loss.backward()
    assert loss.item() == 0.0
    for name, p in predictor.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
