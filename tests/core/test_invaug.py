"""Inverse augmentation: identity, flips, and agreement of two views on their overlap."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from core.invaug import inverse_augment


def _ramp(b: int, k: int, h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([(i + 1) * xs + (k - i) * ys for i in range(k)]).expand(b, k, h, w).clone()


def test_full_box_is_identity() -> None:
    x = torch.randn(3, 5, 7, 9)
    coords = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    out = inverse_augment(x, coords, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_flipped_view_comes_back_unflipped() -> None:
    x = torch.randn(2, 4, 6, 6)
    flipped = x.flip(-1)
    coords = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)  # mirrored full box is the full box
    out = inverse_augment(flipped, coords, torch.tensor([True, False]))
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], flipped[1], atol=1e-5, rtol=1e-5)


def test_matches_per_sample_reference() -> None:
    """The vectorised version equals a plain loop over samples (the release's formulation)."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 8, 8)
    lo = torch.rand(5, 2) * 0.4
    coords = torch.cat([lo, lo + 0.3 + torch.rand(5, 2) * 0.3], 1)
    flags = torch.tensor([True, False, True, True, False])
    ref = []
    for i in range(5):
        box = torch.tensor([[0.0, coords[i, 0] * 8, coords[i, 1] * 8, coords[i, 2] * 8, coords[i, 3] * 8]])
        a = roi_align(x[i : i + 1], box, (8, 8), aligned=True)[0]
        ref.append(a.flip(-1) if flags[i] else a)
    torch.testing.assert_close(inverse_augment(x, coords, flags), torch.stack(ref))


@pytest.mark.parametrize("flip1,flip2", [(False, False), (True, False), (False, True), (True, True)])
def test_two_views_agree_on_overlap(flip1: bool, flip2: bool) -> None:
    """Two crops of one map, aligned with their overlap boxes, equal a direct crop of the overlap.

    The map is linear in x and y, which bilinear RoIAlign reproduces exactly away from borders.
    """
    big = _ramp(1, 3, 64, 64)
    out = 16
    box1 = (8, 4, 40, 36)  # x1, y1, x2, y2 in big-map pixels
    box2 = (24, 12, 56, 44)
    inter = (max(box1[0], box2[0]), max(box1[1], box2[1]), min(box1[2], box2[2]), min(box1[3], box2[3]))

    def view(box, flip):
        t = torch.tensor([[0.0, *map(float, box)]])
        v = roi_align(big, t, (out, out), aligned=True)
        w, h = box[2] - box[0], box[3] - box[1]
        c = torch.tensor([[(inter[0] - box[0]) / w, (inter[1] - box[1]) / h,
                           (inter[2] - box[0]) / w, (inter[3] - box[1]) / h]])  # fmt: skip
        if flip:
            v = v.flip(-1)
            c = torch.tensor([[1 - c[0, 2], c[0, 1], 1 - c[0, 0], c[0, 3]]])
        return v, c

    v1, c1 = view(box1, flip1)
    v2, c2 = view(box2, flip2)
    a1 = inverse_augment(v1, c1, torch.tensor([flip1]))
    a2 = inverse_augment(v2, c2, torch.tensor([flip2]))
    direct = roi_align(big, torch.tensor([[0.0, *map(float, inter)]]), (out, out), aligned=True)
    inner = (..., slice(1, -1), slice(1, -1))  # border samples are clamped by RoIAlign
    torch.testing.assert_close(a1[inner], direct[inner], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(a2[inner], direct[inner], atol=1e-3, rtol=1e-4)


def _spelled(b: int, digits: int, h: int, w: int) -> torch.Tensor:
    """(B, digits, H, W) maps where sample i spells i in base 16, one digit a channel (exact in bf16)."""
    i = torch.arange(b)
    d = torch.stack([(i // 16**j) % 16 for j in range(digits)], dim=1).float()  # (B, digits)
    return d.view(b, digits, 1, 1).expand(b, digits, h, w).contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_autocast_aligns_each_sample_from_its_own_map(dtype: torch.dtype) -> None:
    """Under autocast at a batch of 1,024 (twice the recipes' batch on one GPU) every aligned map is read from
    its own sample: decoding the aligned digits gives back each sample's index."""
    b, digits, h, w = 1024, 3, 4, 4
    maps = _spelled(b, digits, h, w).to(dtype)
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(b, 2, generator=g) * 0.5
    coords = torch.cat([lo, lo + 0.25 + torch.rand(b, 2, generator=g) * 0.25], dim=1)
    flags = torch.rand(b, generator=g) > 0.5
    with torch.autocast("cpu", dtype=dtype):
        out = inverse_augment(maps, coords, flags)
    assert out.dtype == dtype and out.shape == maps.shape
    decoded = sum(out[:, j].float().round() * 16**j for j in range(digits))  # (B, H, W)
    want = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, h, w)
    wrong = (decoded != want).any(dim=(1, 2)).sum().item()
    assert wrong == 0, f"{wrong} of {b} samples aligned from another sample's map"
