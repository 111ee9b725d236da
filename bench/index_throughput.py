"""Indexing throughput (images/s) and peak RSS on CPU for ResNet-18 / ResNet-50 SlotCon at 224.

    .venv/bin/python bench/index_throughput.py                       # R18, R50 × 500, 2000 images
    .venv/bin/python bench/index_throughput.py --archs resnet18 --counts 100

Each (arch, count) runs in its own process (so peak RSS is that build's alone) on synthetic scenes
(160 px, generated once) with an untrained full-size model (K=256, D=256, hidden 4096): the compute
is the same as a trained one. Peak RSS must not grow with the image count beyond the stored results.
Prints one JSON object per run.

``--network-only --device cuda --batch-size 256 --precision fp16|bf16`` times the inference network alone
against the release's fp32 model on the same device (what ``bench/gpu_suite.sh`` runs: its machine has no
pycocotools for a whole build).

``--against-release`` times the release's feature path, reimplemented below from its published
algorithm (``viz_slots.py``: ``SlotConEval``, the teacher's encoder, projector and prototypes with
``requires_grad`` off, the checkpoint loaded into it with ``strict=False``; then per batch the teacher encoder
+ projector in fp32 eval mode, no BN folding, NCHW, normalised, cosines to the prototypes, argmax masks and
the per-prototype mean score, streamed per batch where the release keeps the whole bank; model load
included) against this project's whole index build (:func:`indexer.build.build`, which does more: RLE masks
at image resolution, SQLite, FAISS), alternately on the same JPEGs (640×480, generated) with the same torch
threads and loader workers, each at its own default batch size (the release's ``--batch_size`` 64, the
project's 32; ``--release-batch-size 32`` for equal batches)::

    .venv/bin/python bench/index_throughput.py --against-release --images 200 --rounds 2 --workers 0 [--compile on]

It reports the whole job (``ratio``: model load, a compilation and the project's masks, SQLite and FAISS
included), the steady state (``steady_ratio``: images/s after the first batch of the release and the first
two of the project, whose ``--compile auto`` compiles in its second; full batches only; which is what
decides a long job such as COCO val2017's 5,000 images) and the networks alone (``network_img_s``: one
batch, alternated in this process, the project's eager and compiled paths against the release's).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexer.progress import COMPILE_MODES  # noqa: E402
from trainer.precision import describe_machine  # noqa: E402


def worker(arch: str, count: int, data: Path, ckpt: Path, batch_size: int, workers: int, threads: int) -> dict:
    """Build one index in this process; returns the measurements."""
    import torch

    from indexer.build import build_index

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = build_index(ckpt, data, Path(tmp) / "ix", split="val2017", batch_size=batch_size,
                          workers=workers, limit=count, device="cpu")  # fmt: skip
        seconds = time.perf_counter() - t
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    return {
        "arch": arch, "images": manifest["counts"]["images"], "segments": manifest["counts"]["segments"],
        "seconds": round(seconds, 1), "images_per_s": round(manifest["counts"]["images"] / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "index_mb": round(size_mb, 1), "batch_size": batch_size, "loader_workers": workers,
        "torch_threads": threads, "resolution": 224, "machine": describe_machine(),
    }  # fmt: skip


# -- the release's feature path, reimplemented (not imported) --------------------------------------------


def _release_model(arch: str, dim_hidden: int, dim_out: int, num_prototypes: int):
    """The release's ``SlotConEval`` as ``viz_slots.py``'s ``get_model`` builds it: the teacher's torchvision-named
    ResNet (pre-pool map), its 1×1-conv projector and the prototypes, none of them requiring gradients."""
    import torchvision
    from torch import nn

    class Trunk(torchvision.models.ResNet):
        def __init__(self) -> None:
            block, layers = {"resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
                             "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3])}[arch]  # fmt: skip
            super().__init__(block, layers)
            del self.fc, self.avgpool

        def forward(self, x):  # noqa: ANN001, ANN202
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    class Head(nn.Module):
        """``mlp`` = (Linear|Conv1×1, BN, GELU, Linear|Conv1×1, BN, GELU, Linear|Conv1×1), as the release's."""

        def __init__(self, conv: bool, cin: int) -> None:
            super().__init__()
            lin = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
            norm = nn.BatchNorm2d if conv else nn.BatchNorm1d
            self.mlp = nn.Sequential(lin(cin, dim_hidden), norm(dim_hidden), nn.GELU(), lin(dim_hidden, dim_hidden),
                                     norm(dim_hidden), nn.GELU(), lin(dim_hidden, dim_out))  # fmt: skip

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.mlp(x)

    model = nn.Module()
    model.encoder_k = Trunk()
    model.projector_k = Head(True, 512 if arch == "resnet18" else 2048)
    model.grouping_k = nn.Module()
    model.grouping_k.slot_embed = nn.Embedding(num_prototypes, dim_out)
    for p in model.parameters():
        p.requires_grad = False
    return model


def release_load(path: Path, arch: str):
    """``get_model``: build ``SlotConEval``, load the (``module.``-prefixed) state dict non-strictly (the
    student's tensors are left over), eval mode."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    weights = {k.replace("module.", ""): v for k, v in ckpt["model"].items()}
    proto = weights["grouping_k.slot_embed.weight"]
    model = _release_model(arch, weights["projector_k.mlp.0.weight"].shape[0], proto.shape[1], proto.shape[0])
    missing, _ = model.load_state_dict(weights, strict=False)
    assert not missing, missing  # every teacher tensor of the file is taken
    return model.eval()


class _Folder:
    """The release's ImageFolder + transform: PIL RGB, Resize(256), CenterCrop(224), ToTensor, Normalize."""

    def __init__(self, paths: list[Path]) -> None:
        import torchvision.transforms as T

        self.paths = paths
        self.transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # fmt: skip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):  # noqa: ANN204
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def release_features(model, paths: list[Path], batch_size: int, workers: int, stamps: list | None = None) -> list:
    """``prepare_knn`` streamed per batch (the release keeps the whole bank): per image the (h, w) argmax
    prototype and the (K,) per-prototype mean scores. Returns the argmax maps; appends (images done, time)
    to ``stamps`` after every batch."""
    import torch
    import torch.nn.functional as F

    loader = torch.utils.data.DataLoader(_Folder(paths), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, drop_last=False)  # fmt: skip
    prototypes = F.normalize(model.grouping_k.slot_embed.weight, dim=1)  # K x D
    maps = []
    with torch.no_grad():
        for data in loader:
            feature = F.normalize(model.projector_k(model.encoder_k(data)), dim=1)
            dots = torch.einsum("kd,ndhw->nkhw", prototypes, feature)
            masks = torch.zeros_like(dots).scatter_(1, dots.argmax(1, keepdim=True), 1)
            adder = masks + 1.0e-6
            _scores = (dots * adder).sum(-1).sum(-1) / adder.sum(-1).sum(-1)  # N x K
            maps.append(dots.argmax(1))
            if stamps is not None:
                stamps.append((sum(len(m) for m in maps), time.perf_counter()))
    return maps


def steady_rate(stamps: list[tuple[int, float]], skip: int = 2) -> float | None:
    """Images/s after the first ``skip`` batches (model load, first-call set-up and a compilation excluded),
    from (images done, time) stamps, over full batches only (a short last batch costs a compiled model a full
    one: it is padded); None with too few batches."""
    if len(stamps) > 2 and stamps[-1][0] - stamps[-2][0] < stamps[1][0] - stamps[0][0]:
        stamps = stamps[:-1]
    if len(stamps) <= skip + 1:
        return None
    (n0, t0), (n1, t1) = stamps[skip - 1], stamps[-1]
    return (n1 - n0) / (t1 - t0)


def _jpegs(out: Path, n: int, width: int = 640, height: int = 480) -> list[Path]:
    """``n`` synthetic scenes (core.synthetic) rendered at ``width`` px and cropped to ``width``×``height``."""
    import numpy as np
    from PIL import Image

    from core.synthetic import render_scene

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image, _, _ = render_scene(np.random.default_rng(i), width)
        top = (width - height) // 2
        path = out / f"{i:06d}.jpg"
        Image.fromarray(image[top : top + height]).save(path, quality=90)
        paths.append(path)
    return paths


def alternate(runs: dict, images: int, rounds: int, sync=lambda: None) -> dict[str, float]:  # noqa: ANN001
    """Median images/s of each of ``runs`` (name → a call on one batch of ``images``), after one untimed call
    each (oneDNN / cuDNN set-up, a compilation), alternated ``rounds`` times so a burst of load hits all;
    ``sync`` waits for the device."""
    import statistics

    import torch

    rates: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for f in runs.values():
            f()
        sync()
        for _ in range(rounds):
            for name, f in runs.items():
                t = time.perf_counter()
                f()
                sync()
                rates[name].append(images / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in rates.items()}


def network_ab(ckpt: Path, args: argparse.Namespace, x) -> dict:  # noqa: ANN001
    """The networks alone on one batch (no data, masks or storage), alternated ``--network-rounds`` times in
    this process: the release's ``SlotConEval`` in fp32 NCHW (encoder_k + projector_k, as it runs them) against
    the project's inference model, eager (also without its early-stage chunking) and (unless ``--compile off``)
    compiled. Medians in images/s."""
    from core.infer_model import InferOptions, load_inference_model

    release = release_load(ckpt, args.arch)
    eager = load_inference_model(ckpt, options=InferOptions())
    runs = {"release": lambda: release.projector_k(release.encoder_k(x)),
            "project_eager": lambda: eager.infer_outputs(x, features=True)}  # fmt: skip
    unchunked = load_inference_model(ckpt, options=InferOptions(early_chunk=False))
    runs["project_eager_unchunked"] = lambda: unchunked.infer_outputs(x, features=True)
    if args.compile != "off":
        compiled = load_inference_model(ckpt, options=InferOptions(compile=True))
        runs["project_compiled"] = lambda: compiled.infer_outputs(x, features=True)
    out = {k: round(v, 2) for k, v in alternate(runs, len(x), args.network_rounds).items()}
    out["ratios"] = {k: round(out[k] / out["release"], 2) for k in runs if k != "release"}
    return out


def against_release(args: argparse.Namespace) -> dict:
    """Alternate the release's feature path and this project's index build; returns the measurements."""
    import statistics

    import torch

    from core.checkpoint import to_release_state
    from core.infer_model import load_inference_model
    from core.inference import teacher_outputs
    from core.model import SlotCon, SlotConConfig
    from indexer.build import IndexConfig, build

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        paths = _jpegs(root / "val2017", args.images)
        torch.manual_seed(0)
        model = SlotCon(SlotConConfig(arch=args.arch))
        with torch.no_grad():  # BN statistics away from their init, so the folded weights are not trivial
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
        ckpt = Path(tmp) / "release.pth"
        torch.save(to_release_state(model), ckpt)  # the release's file layout
        del model
        t = time.perf_counter()
        release = release_load(ckpt, args.arch)
        release_load_s = time.perf_counter() - t
        t = time.perf_counter()
        fast = load_inference_model(ckpt)
        fast_load_s = time.perf_counter() - t
        # correctness on the first batch: the feature-resolution argmax of both paths
        x = torch.stack([_Folder(paths)[i] for i in range(min(8, len(paths)))])
        ref = release_features(release, paths[: len(x)], len(x), 0)[0]
        agree = (teacher_outputs(fast, x)[1].argmax(1) == ref).float().mean().item()
        del fast, release
        times: dict[str, list[float]] = {"release": [], "project": []}
        steady: dict[str, list[float]] = {"release": [], "project": []}
        compiled: list[bool] = []
        compile_flag = COMPILE_MODES[args.compile]
        for r in range(args.rounds):
            stamps: list[tuple[int, float]] = []
            t = time.perf_counter()  # both timed end to end: model load included, as a build includes it
            release_features(release_load(ckpt, args.arch), paths, args.release_batch_size, args.workers, stamps)
            times["release"].append(time.perf_counter() - t)
            steady["release"].append(steady_rate(stamps, skip=1))  # eager: only its first batch sets up
            stamps = []

            def stamp(done: int, total: int, stage: str, stamps: list = stamps) -> None:
                if stage == "index" and (not stamps or done > stamps[-1][0]):
                    stamps.append((done, time.perf_counter()))

            t = time.perf_counter()
            out = build(IndexConfig(ckpt, root, Path(tmp) / f"ix{r}", split="val2017", batch_size=args.batch_size,
                                    workers=args.workers, device="cpu", use_labels=False, jpeg_draft=args.jpeg_draft,
                                    compile=compile_flag), stamp)  # fmt: skip
            times["project"].append(time.perf_counter() - t)
            steady["project"].append(steady_rate(stamps))  # --compile auto compiles in the second batch
            compiled.append("compile" in json.loads((out / "manifest.json").read_text())["inference"])
        first = torch.stack([_Folder(paths)[i] for i in range(min(args.batch_size, len(paths)))])
        network = network_ab(ckpt, args, first)
    rel, proj = statistics.median(times["release"]), statistics.median(times["project"])
    rel_s = statistics.median([v for v in steady["release"] if v] or [0.0])  # 0: too few batches to tell
    proj_s = statistics.median([v for v in steady["project"] if v] or [0.0])
    return {
        "mode": "against-release", "arch": args.arch, "resolution": 224, "precision": "fp32",
        "images": args.images, "image_size": [640, 480], "rounds": args.rounds, "batch_size": args.batch_size,
        "release_batch_size": args.release_batch_size,
        "loader_workers": args.workers, "jpeg_draft": args.jpeg_draft,
        "release_img_s": round(args.images / rel, 2), "project_index_img_s": round(args.images / proj, 2),
        "ratio": round(rel / proj, 2), "seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "steady_img_s": {"release": round(rel_s, 2), "project": round(proj_s, 2)},
        "steady_ratio": round(proj_s / rel_s, 2) if rel_s else None,
        "steady_img_s_per_round": {k: [round(v, 2) if v else None for v in vs] for k, vs in steady.items()},
        "compile": args.compile, "compiled": compiled, "network_img_s": network,
        "load_seconds": {"release_teacher": round(release_load_s, 2), "project_teacher_only": round(fast_load_s, 2)},
        "argmax_agreement_first_batch": round(agree, 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": describe_machine(),
    }  # fmt: skip


def network_only(args: argparse.Namespace) -> dict:
    """``--network-only``: the inference network (teacher encoder + projector + prototype scores, what an index
    build, an evaluation and an upload run per batch) on random input at ``--batch-size``, on ``--device`` at
    ``--precision`` (``core.infer_model``'s autocast on CUDA), against the release's fp32 NCHW ``SlotConEval`` on
    the same device, and on a CPU against the project's model without its early-stage chunking (same
    ``--compile``). No data, masks, pycocotools or storage: the part of indexing a GPU speeds up, measurable
    where the rest is not installed (``bench/gpu_suite.sh``)."""

    import torch

    from core.checkpoint import to_release_state
    from core.infer_model import InferOptions, load_inference_model
    from core.model import SlotCon, SlotConConfig

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = Path(tmp) / "release.pth"
        torch.save(to_release_state(SlotCon(SlotConConfig(arch=args.arch))), ckpt)
        release = release_load(ckpt, args.arch).to(dev)
        opts = InferOptions(precision=args.precision, compile=args.compile == "on")
        fast = load_inference_model(ckpt, dev, opts)
        unchunked = load_inference_model(ckpt, dev, replace(opts, early_chunk=False)) if dev.type == "cpu" else None
    x = torch.randn(args.batch_size, 3, 224, 224, device=dev)
    runs = {"release_fp32": lambda: release.projector_k(release.encoder_k(x)),
            f"project_{fast.options.precision}": lambda: fast.infer_outputs(x)}  # fmt: skip
    if unchunked is not None:
        runs["project_unchunked"] = lambda: unchunked.infer_outputs(x)
    out = {k: round(v, 1) for k, v in alternate(runs, args.batch_size, args.network_rounds, sync).items()}
    names = list(runs)
    return {
        "mode": "network-only", "arch": args.arch, "resolution": 224, "batch_size": args.batch_size,
        "device": str(dev), "img_s": out, "ratio": round(out[names[1]] / out[names[0]], 2),
        "compile": args.compile == "on", "rounds": args.network_rounds,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if dev.type == "cuda" else None,
        "machine": describe_machine(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="*", default=["resnet18", "resnet50"])
    p.add_argument("--counts", nargs="*", type=int, default=[500, 2000])
    p.add_argument("--data", type=Path, default=None, help="dataset root with val2017/ (default: synthetic)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--release-batch-size",
        type=int,
        default=64,
        help="with --against-release: the release's batch (viz_slots.py's --batch_size default)",
    )
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--worker", nargs=3, metavar=("ARCH", "COUNT", "CKPT"), help=argparse.SUPPRESS)
    p.add_argument("--against-release", action="store_true", help="side by side with the release's feature path")
    p.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"], help="with --against-release")
    p.add_argument("--images", type=int, default=96, help="640x480 JPEGs, with --against-release")
    p.add_argument("--rounds", type=int, default=2, help="alternations, with --against-release")
    p.add_argument("--jpeg-draft", action="store_true", help="the project's path decodes JPEGs at reduced size")
    p.add_argument("--network-rounds", type=int, default=6, help="alternations of the network-only A/B")
    p.add_argument("--network-only", action="store_true", help="the inference network alone, on --device")
    p.add_argument("--device", default="cpu", help="with --network-only: cpu or cuda")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="with --network-only: the project's precision (auto: fp16 on CUDA, fp32 on CPU)")  # fmt: skip
    p.add_argument("--compile", choices=tuple(COMPILE_MODES), default="auto",
                   help="the project's torch.compile setting (its index build's default: auto)")  # fmt: skip
    args = p.parse_args(argv)
    if args.network_only:
        print(json.dumps(network_only(args)), flush=True)
        return 0
    if args.against_release:
        print(json.dumps(against_release(args)), flush=True)
        return 0
    if args.worker:
        arch, count, ckpt = args.worker
        print(json.dumps(worker(arch, int(count), args.data, Path(ckpt), args.batch_size, args.workers,
                                args.threads)))  # fmt: skip
        return 0

    import torch

    from core.checkpoint import save_checkpoint
    from core.model import SlotCon, SlotConConfig
    from core.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "synthetic"
            generate(data, num_train=0, num_val=max(args.counts), size=160, seed=0)
        for arch in args.archs:
            torch.manual_seed(0)
            ckpt = Path(tmp) / f"{arch}.pth"
            save_checkpoint(ckpt, SlotCon(SlotConConfig(arch=arch)))
            for count in args.counts:
                cmd = [sys.executable, __file__, "--data", str(data), "--batch-size", str(args.batch_size),
                       "--workers", str(args.workers), "--threads", str(args.threads),
                       "--worker", arch, str(count), str(ckpt)]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if proc.returncode != 0:
                    print(json.dumps({"arch": arch, "count": count, "error": proc.stderr[-2000:]}), flush=True)
                    continue
                print(proc.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
