"""The API behind each page at K = 2048 prototypes: response sizes and times (budgets: < 1 MB, < 2 s).

Builds a real index of the synthetic val images with a K = 2048 model (a small random-initialised
network: the routes' cost depends on K and the segment count, not on how good the model is), serves
it in-process (FastAPI's TestClient, no network), and requests each page's routes cold (first request,
caches empty) and warm. Prints one JSON object: per route, bytes and milliseconds, and the machine.

    python bench/ui_scale.py [--k 2048] [--images 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: page → the routes it calls on first paint
PAGES = {
    "Concepts (grid)": ["/api/health", "/api/prototypes?sort=most_active&hide_dead=true&offset=0&limit=24"],
    "Concepts (map)": ["/api/prototypes/map", "/api/prototypes"],
    "Concept detail": ["/api/prototypes/{k}", "/api/prototypes/{k}/segments?limit=20"],
    "Image slots (pick)": ["/api/images?limit=60"],
    "Slot statistics": ["/api/stats", "/api/prototypes/similarity.png", "/api/options"],
    "Unsupervised segmentation": ["/api/eval"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--images", type=int, default=200, help="synthetic val images to index")
    p.add_argument("--repeat", type=int, default=3, help="warm requests per route (the median is kept)")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from api_load import machine
    from fastapi.testclient import TestClient

    from core.checkpoint import save_checkpoint
    from core.model import SlotCon, SlotConConfig
    from core.synthetic import generate
    from indexer.build import build_index
    from server.app import create_app
    from server.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "data", num_train=0, num_val=args.images, size=128, seed=0)
        torch.manual_seed(0)
        model = SlotCon(
            SlotConConfig(arch="resnet18", width=0.25, stride16=True, dim_hidden=64, dim_out=32, num_prototypes=args.k)
        )
        ckpt = save_checkpoint(tmp / "runs" / "k" / "final.pth", model, epoch=0, step=0)
        t0 = time.perf_counter()
        index = build_index(ckpt, tmp / "data", tmp / "indexes" / "k", split="val2017", batch_size=16)
        build_s = time.perf_counter() - t0
        settings = Settings(
            index=index,
            data_root=tmp / "data",
            runs_dir=tmp / "runs",
            indexes_dir=tmp / "indexes",
            state_dir=tmp / "state",
            trusted_hosts="testserver",
        )
        with TestClient(create_app(settings)) as client:
            protos = client.get("/api/prototypes").json()["items"]
            k = next(p["id"] for p in protos if not p["dead"])
            pages = {}
            for page, routes in PAGES.items():
                rows = []
                for route in routes:
                    url = route.format(k=k)
                    t = time.perf_counter()
                    r = client.get(url)
                    cold = (time.perf_counter() - t) * 1000
                    warm = []
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        client.get(url)
                        warm.append((time.perf_counter() - t) * 1000)
                    rows.append(
                        {
                            "route": url,
                            "status": r.status_code,
                            "bytes": len(r.content),
                            "cold_ms": round(cold, 1),
                            "warm_ms": round(float(np.median(warm)), 1),
                        }
                    )
                pages[page] = {
                    "routes": rows,
                    "first_paint_api_ms": round(sum(r["cold_ms"] for r in rows), 1),
                    "bytes": sum(r["bytes"] for r in rows),
                }
            counts = client.get("/api/health").json()
    worst = max(pages.values(), key=lambda v: v["first_paint_api_ms"])
    print(
        json.dumps(
            {
                "k": args.k,
                "images": args.images,
                "build_s": round(build_s, 1),
                "health": counts,
                "pages": pages,
                "largest_response_bytes": max(r["bytes"] for v in pages.values() for r in v["routes"]),
                "slowest_page_api_ms": worst["first_paint_api_ms"],
                "budgets": {"response_bytes": 1_000_000, "page_ms": 2000},
                "machine": machine(),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
