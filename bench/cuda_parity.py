"""CUDA vs CPU parity of the SlotCon core, and finiteness under fp16/bf16 autocast. Prints JSON.

Run on a machine with a GPU: ``python bench/cuda_parity.py``. The same weights and batch go through the
CPU and the CUDA model in fp32; loss terms, teacher scores and student gradients are compared
(relative error), then the step is repeated under autocast in fp16 and bf16.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.inference import prototype_scores  # noqa: E402
from core.model import SlotCon, SlotConConfig  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def _batch(b: int, size: int, device: str):
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(b, 3, size, size, generator=g) for _ in range(2)]
    lo = torch.rand(b, 2, generator=g) * 0.3
    box = torch.cat([lo, lo + 0.5], 1)
    coords = [box, box.flip(0)]
    flags = [torch.rand(b, generator=g) < 0.5, torch.rand(b, generator=g) < 0.5]
    return [c.to(device) for c in crops], [c.to(device) for c in coords], [f.to(device) for f in flags]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm() / (b.float().cpu().norm() + 1e-12))


def main() -> int:
    """Prints one JSON object with the parity figures; exit 1 when fp32 parity exceeds 1e-4."""
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cfg = SlotConConfig(arch="resnet18", dim_hidden=512, dim_out=64, num_prototypes=32)
    cpu = SlotCon(cfg)
    with torch.no_grad():
        for p in cpu.parameters():
            p.add_(0.02 * torch.randn_like(p))
    gpu = SlotCon(cfg).cuda()
    gpu.load_state_dict(cpu.state_dict())
    out_c = cpu(*_batch(8, 96, "cpu"))
    out_c["loss"].backward()
    out_g = gpu(*_batch(8, 96, "cuda"))
    out_g["loss"].backward()
    grads = {n: p.grad for n, p in cpu.named_parameters() if p.grad is not None and p.ndim > 1}
    ggrads = dict(gpu.named_parameters())
    worst = max(_rel(ggrads[n].grad, g) for n, g in grads.items())
    x = torch.randn(4, 3, 96, 96)
    res = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "machine": describe_machine(),
        "loss_rel": {k: _rel(out_g[k].detach(), out_c[k].detach()) for k in ("loss", "loss_group", "loss_slot")},
        "center_batch_rel": _rel(out_g["center_batch"], out_c["center_batch"]),
        "worst_weight_grad_rel": worst,
        "scores_rel": _rel(prototype_scores(gpu, x.cuda()), prototype_scores(cpu, x)),
    }
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        gpu.zero_grad()
        with torch.autocast("cuda", dtype=dtype):
            out = gpu(*_batch(8, 96, "cuda"))
        out["loss"].backward()
        res[f"{name}_loss"] = float(out["loss"])
        res[f"{name}_loss_rel_to_fp32"] = _rel(out["loss"].detach(), out_c["loss"].detach())
        grads_now = [p.grad for p in gpu.parameters() if p.grad is not None]
        res[f"{name}_finite_grads"] = all(torch.isfinite(g).all().item() for g in grads_now)
    print(json.dumps(res))
    ok = max(res["loss_rel"].values()) < 1e-4 and res["scores_rel"] < 1e-4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
