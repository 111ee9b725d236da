"""The SlotCon module: forward outputs, gradient flow, EMA and centre steps, a loop reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def _batch(b: int = 4, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    crops = [torch.randn(b, 3, size, size, generator=g) for _ in range(2)]
    lo = torch.rand(b, 2, generator=g) * 0.3
    box = torch.cat([lo, lo + 0.5 + torch.rand(b, 2, generator=g) * 0.2], 1).clamp(max=1)
    coords = [box, box.flip(0)]
    flags = [torch.rand(b, generator=g) < 0.5, torch.rand(b, generator=g) < 0.5]
    return crops, coords, flags


def test_forward_returns_named_terms(make_tiny_model) -> None:
    model = make_tiny_model()
    out = model(*_batch())
    assert {"loss", "loss_group", "loss_slot", "center_batch", "active_slots", "batch_dead"} <= out.keys()
    expected = 0.5 * out["loss_group"] + 0.5 * out["loss_slot"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert out["center_batch"].shape == (1, 8)
    assert 1 <= out["active_slots"].item() <= 8


def test_gradients_reach_only_the_student(make_tiny_model) -> None:
    model = make_tiny_model()
    model(*_batch())["loss"].backward()
    for name, p in model.named_parameters():
        if "_k." in name:
            assert not p.requires_grad and p.grad is None, name
    assert model.encoder_q.conv1.weight.grad.abs().sum() > 0
    assert model.grouping_q.slot_embed.weight.grad.abs().sum() > 0
    assert model.predictor_slot.mlp[0].weight.grad.abs().sum() > 0


def test_momentum_update_math(make_tiny_model) -> None:
    model = make_tiny_model()
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
        model.encoder_q.bn1.running_mean.add_(5.0)
    before_k = {k: v.clone() for k, v in model.state_dict().items()}
    q = {k: v.clone() for k, v in model.state_dict().items()}
    model.momentum_update(0.9)
    after = model.state_dict()
    for name, _ in model.named_parameters():
        if name.startswith(("encoder_k.", "projector_k.", "grouping_k.")):
            src = name.replace("_k.", "_q.", 1)
            torch.testing.assert_close(after[name], 0.9 * before_k[name] + 0.1 * q[src])
    # BN buffers are not averaged
    torch.testing.assert_close(after["encoder_k.bn1.running_mean"], before_k["encoder_k.bn1.running_mean"])
    model.momentum_update(0.0)
    torch.testing.assert_close(model.encoder_k.conv1.weight, model.encoder_q.conv1.weight)


def test_update_center_math(make_tiny_model) -> None:
    model = make_tiny_model()
    model.center.fill_(1.0)
    model.update_center(torch.full((1, 8), 3.0))
    torch.testing.assert_close(model.center, torch.full((1, 8), 0.9 * 1.0 + 0.1 * 3.0))


def test_forward_matches_loop_reference(make_tiny_model) -> None:
    """Recompute the loss from the submodules with plain loops (docs/method.md §2–4 written out)."""
    model = make_tiny_model(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        model.center.copy_(0.1 * torch.randn(1, 8))
    crops, coords, flags = _batch(seed=5)
    torch.manual_seed(0)
    out = model(crops, coords, flags)

    cfg = model.config

    def group(z, protos):
        dots = torch.einsum("kd,bdhw->bkhw", F.normalize(protos, dim=1), F.normalize(z, dim=1))
        attn = F.softmax(dots / cfg.teacher_temp, dim=1) + 1e-6
        slots = torch.stack([
            torch.stack([(z[b] * attn[b, k]).sum((1, 2)) / attn[b, k].sum() for k in range(dots.shape[1])])
            for b in range(z.shape[0])
        ])  # fmt: skip
        return slots, dots

    def align(x, c, f):
        _, _, h, w = x.shape
        rows = []
        for i in range(x.shape[0]):
            box = torch.tensor([[0.0, c[i, 0] * w, c[i, 1] * h, c[i, 2] * w, c[i, 3] * h]])
            a = roi_align(x[i : i + 1], box, (h, w), aligned=True)[0]
            rows.append(a.flip(-1) if f[i] else a)
        return torch.stack(rows)

    def gl(s, t):
        vals = []
        for b in range(s.shape[0]):
            for i in range(s.shape[2]):
                for j in range(s.shape[3]):
                    q = F.softmax((t[b, :, i, j] - model.center[0]) / cfg.teacher_temp, 0)
                    vals.append(-(q * F.log_softmax(s[b, :, i, j] / cfg.student_temp, 0)).sum())
        return torch.stack(vals).mean()

    def present(d):
        return [[bool((d[b].argmax(0) == k).any()) for k in range(d.shape[1])] for b in range(d.shape[0])]

    def sl(qs, ks, dq, dk):
        pq, pk = present(dq), present(dk)
        keys = [(b, k) for b in range(ks.shape[0]) for k in range(ks.shape[1]) if pk[b][k]]
        kv = torch.stack([F.normalize(ks[b, k], dim=0) for b, k in keys])
        sel = [(b, k) for b, k in keys if pq[b][k]]
        preds = F.normalize(model.predictor_slot(torch.stack([qs[b, k] for b, k in sel])), dim=1)
        logits = preds @ kv.t() / cfg.slot_temp
        labels = torch.tensor([keys.index(s) for s in sel])
        return F.cross_entropy(logits, labels) * 2 * cfg.slot_temp

    x1, x2 = (model.projector_q(model.encoder_q(c)) for c in crops)
    with torch.no_grad():
        y1, y2 = (model.projector_k(model.encoder_k(c)) for c in crops)
    q1, d1 = group(x1, model.grouping_q.slot_embed.weight)
    q2, d2 = group(x2, model.grouping_q.slot_embed.weight)
    k1, e1 = group(y1, model.grouping_k.slot_embed.weight)
    k2, e2 = group(y2, model.grouping_k.slot_embed.weight)
    g = gl(align(d1, coords[0], flags[0]), align(e2, coords[1], flags[1])) + gl(
        align(d2, coords[1], flags[1]), align(e1, coords[0], flags[0])
    )
    s = sl(q1, k2, d1, e2) + sl(q2, k1, d2, e1)
    torch.testing.assert_close(out["loss_group"], g.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss_slot"], s.detach(), rtol=1e-4, atol=1e-5)
    center = torch.cat([e1, e2]).permute(0, 2, 3, 1).reshape(-1, 8).mean(0, keepdim=True)
    torch.testing.assert_close(out["center_batch"], center, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_training_steps_decrease_fixed_batch_loss(make_tiny_model) -> None:
    model = make_tiny_model(seed=1)
    batch = _batch(b=8, seed=2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        model.momentum_update(0.99)
        out = model(*batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.update_center(out["center_batch"])
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0]


def test_positive_pairs_count_the_slots_present_in_both_views(make_tiny_model) -> None:
    """``positive_pairs`` (Eq. 6, the paper's 3.6 per image): per image and direction, the slots present in the
    student's view a and in the teacher's view b, counted by hand from each network's own argmax."""
    model = make_tiny_model()
    crops, coords, flags = _batch(b=6)
    out = model(crops, coords, flags)
    with torch.no_grad():

        def present(dots: torch.Tensor) -> torch.Tensor:  # (B, K, h, w) → (B, K) bool
            return F.one_hot(dots.argmax(1).flatten(1), dots.shape[1]).amax(1).bool()

        student = [present(model.grouping_q(model.projector_q(model.encoder_q(c)))[1]) for c in crops]
        teacher = [present(model.grouping_k(model.teacher_project(c))[1]) for c in crops]
    pairs = ((student[0] & teacher[1]).sum(1) + (student[1] & teacher[0]).sum(1)).float()  # (B,)
    assert pairs.sum() > 0
    torch.testing.assert_close(out["positive_pairs"], pairs.mean() / 2)
