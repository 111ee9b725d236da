"""Does inverse augmentation align every sample from its own map under half-precision autocast? Prints JSON.

Each sample's map spells its own index in base 16 (one digit a channel, exact in bf16); after
``core.invaug.inverse_augment`` under autocast, decoding the aligned digits must give each index back. A bf16
box once held odd indices above 256 as their neighbours (128 of 512 samples misaligned).

    python bench/bf16_alignment.py --device cuda --batch-size 1024
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.invaug import inverse_augment  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def misaligned(batch: int, dtype: torch.dtype, device: str, digits: int = 3, size: int = 7) -> int:
    """The number of samples whose aligned map is read from another sample's map."""
    i = torch.arange(batch)
    d = torch.stack([(i // 16**j) % 16 for j in range(digits)], 1).float().view(batch, digits, 1, 1)
    maps = d.expand(batch, digits, size, size).contiguous().to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(batch, 2, generator=g) * 0.5
    coords = torch.cat([lo, lo + 0.25 + torch.rand(batch, 2, generator=g) * 0.25], 1).to(device)
    flags = (torch.rand(batch, generator=g) > 0.5).to(device)
    with torch.autocast(torch.device(device).type, dtype=dtype):
        out = inverse_augment(maps, coords, flags)
    decoded = sum(out[:, j].float().round() * 16**j for j in range(digits)).cpu()
    return int((decoded != i.float().view(batch, 1, 1)).any(dim=(1, 2)).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=1024)
    a = p.parse_args(argv)
    result = {"bench": "bf16_alignment", **describe_machine(), "device": a.device, "batch_size": a.batch_size}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        result[f"misaligned_{name}"] = misaligned(a.batch_size, dtype, a.device)
    print(json.dumps(result))
    return 0 if not any(v for k, v in result.items() if k.startswith("misaligned_")) else 1


if __name__ == "__main__":
    sys.exit(main())
