"""Inference built for inference: the teacher alone, BatchNorm folded, the fastest layout.

:func:`load_inference_model` reads only the teacher's encoder, projector and prototypes from a checkpoint
(own format or the public release's, docs/method.md §8; the file is memory-mapped so the student, predictor and
optimiser are never read), folds every eval-mode BatchNorm into the convolution before it, and returns an
:class:`InferenceModel` whose :meth:`InferenceModel.infer_outputs` gives exactly what
:func:`core.inference.teacher_outputs` gives for the full model: ``(z_norm (B, D, h, w), scores (B, K, h, w))``.
``core.inference.teacher_outputs`` (and so ``prototype_scores``, ``indexer.segments``, the index build,
the evaluation and uploads) dispatches to it, so the rest of the code takes it where it took a
:class:`~core.model.SlotCon`. It also carries ``config``, ``grouping_k.slot_embed.weight`` and
``teacher_project`` as the full model does.

Options (:class:`InferOptions`, plain values passed in; this package reads no environment variable: the
command lines and the server build them from their settings, ``indexer.settings.InferSettings``):

- ``fold_bn`` (default on): conv·BN → conv with bias, computed in float64.
- ``channels_last`` (default None, auto: on for CPU fp32 and for CUDA, where oneDNN / cuDNN run NHWC
  convolutions faster).
- ``precision`` (``auto``, ``fp32``, ``fp16``, ``bf16``; auto = fp32 on CPU, fp16 autocast on CUDA). Scores
  and z are always returned in fp32.
- ``early_chunk`` (default on; CPU only): the encoder's early stages (stem, ``layer1``, ``layer2``: large
  activations, small weights) run on chunks of the batch whose largest activation stays under
  :data:`EARLY_CHUNK_BYTES` (glibc's largest mmap threshold), the late stages and the projector (most of the
  weights) on the whole batch: a tensor above the threshold is unmapped when freed and mapped and
  page-faulted in afresh for the next batch, one below it is reused from the heap. Outputs are
  bit-identical: each image is computed alone in eval mode.
- ``compile`` (default off; :class:`CompilePlan` turns it on for long CPU jobs): ``torch.compile`` of the
  encoder's early and late stages and of the projector with Inductor's *freezing* (the weights become
  constants: convolutions run with pre-packed weights and fused ReLU / residual-add epilogues). Shapes are
  static: a batch smaller than the first one is padded with zeros to its size (eval-mode layers treat
  every image alone, so the padding changes nothing) instead of compiling again. Its first call compiles,
  so it pays back only over long jobs. Where compiling fails (no C++ compiler, an unsupported platform) it
  warns once and runs eager.

:func:`inference_model_for` with ``fused=False`` returns the full model instead: the reference path (the
command lines' ``--plain-inference``; ``SLOTCON_INFER=plain`` in the settings of the command lines and the
server).

On CUDA, CPU inputs are pinned and copied asynchronously (:func:`to_device`). Everything runs under
``torch.inference_mode``. In fp32 the outputs equal the plain path's to float rounding (scores within
1e-4; assignments identical except at ties, ``tests/core/test_infer_model.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import FORMAT, CheckpointError, read_checkpoint, release_config
from core.encoder import ResNetTrunk
from core.heads import DenseProjector
from core.model import SlotConConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_TEACHER_PREFIXES = ("encoder_k.", "projector_k.")
_PROTOTYPES = "grouping_k.slot_embed.weight"


@dataclass(frozen=True)
class InferOptions:
    """How the inference model runs (see the module doc); None for ``channels_last`` means auto."""

    fold_bn: bool = True
    channels_last: bool | None = None
    precision: str = "auto"
    compile: bool = False
    early_chunk: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def resolved(self, device: torch.device) -> InferOptions:
        """``auto`` fields decided for ``device``: fp32 on CPU and fp16 on CUDA; channels_last on both;
        ``early_chunk`` on CPU only (a GPU's caching allocator reuses its memory at any size)."""
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = device.type == "cuda" or precision == "fp32"
        early_chunk = self.early_chunk and device.type == "cpu"
        return replace(self, precision=precision, channels_last=channels_last, early_chunk=early_chunk)


# -- BatchNorm folding ----------------------------------------------------------------------------------


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode (running statistics), computed in float64."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    with torch.device("meta"):  # no random init of weights that are overwritten (seconds for 4096² convs)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)  # fmt: skip
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter((w * scale.view(-1, *([1] * (w.dim() - 1)))).to(dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - mean) * scale + beta).to(dtype), requires_grad=False)
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d, in place; returns ``module``.

    Two patterns cover the ResNet trunk and the dense projector: consecutive ``(Conv2d, BatchNorm2d)`` in an
    ``nn.Sequential`` (downsample, projector MLP) and sibling attributes ``convN`` / ``bnN`` (stem and
    residual blocks, whose ``forward`` applies ``bnN`` right after ``convN``). Raises ValueError when a
    BatchNorm is left over (a layout this does not know), so nothing is silently half-folded.
    """
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names, names[1:], strict=False):
                conv, bn = parent._modules[a], parent._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    parent._modules[a] = fold_conv_bn(conv, bn)
                    parent._modules[b] = nn.Identity()
        for name, child in list(parent._modules.items()):
            if name.startswith("conv") and isinstance(child, nn.Conv2d):
                bn_name = "bn" + name[len("conv") :]
                bn = parent._modules.get(bn_name)
                if isinstance(bn, nn.BatchNorm2d):
                    parent._modules[name] = fold_conv_bn(child, bn)
                    parent._modules[bn_name] = nn.Identity()
    left = [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"BatchNorm layers not folded: {left[:4]}")
    return module


# -- the model ------------------------------------------------------------------------------------------


class _Grouping(nn.Module):
    """Holds the prototypes under the full model's name (``grouping_k.slot_embed.weight``)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.slot_embed = nn.Embedding.from_pretrained(weight.float().clone(), freeze=True)


class InferenceModel(nn.Module):
    """Teacher encoder + projector + prototypes, for inference only (see the module doc)."""

    def __init__(
        self,
        config: SlotConConfig,
        encoder: nn.Module,
        projector: nn.Module,
        prototypes: torch.Tensor,
        options: InferOptions | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder_k, self.projector_k = encoder, projector
        self.grouping_k = _Grouping(prototypes)
        for p in self.parameters():
            p.requires_grad_(False)
        self.options = options or InferOptions()
        self._parts: tuple[Any, ...] = ()  # (early stages, late stages, projector) once prepared
        self.eval()

    @property
    def device(self) -> torch.device:
        """The device the weights are on."""
        return self.grouping_k.slot_embed.weight.device

    def prepare(self, device: str | torch.device | None = None) -> InferenceModel:
        """Move to ``device``, resolve the options for it, fold BN, set the layout and compile; returns self."""
        dev = torch.device(device) if device is not None else self.device
        self.to(dev)
        opts = self.options.resolved(dev)
        if opts.fold_bn:
            fold_batchnorm(self.encoder_k)
            fold_batchnorm(self.projector_k)
            self.to(dev)
        fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
        self.encoder_k.to(memory_format=fmt)
        self.projector_k.to(memory_format=fmt)
        self.options = opts
        parts = (_Stage(self.encoder_k, "early"), _Stage(self.encoder_k, "late"), self.projector_k)
        self._set_runners(_Compiled.group(*parts) if opts.compile else parts)
        self.eval()
        return self

    @property
    def compiled(self) -> bool:
        """Whether the model runs through ``torch.compile`` (and has not fallen back to eager)."""
        return any(isinstance(m, _Compiled) and m.fn is not None for m in self._parts)

    def compile_now(self) -> InferenceModel:
        """Switch a prepared model to the compiled path (``options.compile``); compiles at the next call.
        For callers that decide late, e.g. the index build once it knows how long the job is."""
        if not self._parts:
            self.prepare()
        if not self.options.compile:
            self.options = replace(self.options, compile=True)
            self._set_runners(_Compiled.group(*self._parts))
        return self

    def _set_runners(self, parts: tuple[Any, ...]) -> None:
        # a plain attribute, not registered submodules: the weights are already ours as encoder_k / projector_k
        object.__setattr__(self, "_parts", tuple(parts))

    def early_chunk_size(self, x: torch.Tensor) -> int:
        """Images per chunk of the early stages for the batch ``x`` (``options.early_chunk``): the fewest
        equal chunks whose largest activation fits :data:`EARLY_CHUNK_BYTES`, and no larger than the batch
        the compiled early stages were compiled for (a smaller chunk is padded to it, a larger one would
        compile again); the whole batch when chunking is off."""
        n = x.shape[0]
        if not self.options.early_chunk or n <= 1:
            return n
        per_image = self.encoder_k.early_bytes(x.shape[-2], x.shape[-1], x.element_size())
        most = max(1, EARLY_CHUNK_BYTES // per_image)
        pieces = -(-n // most)
        size = -(-n // pieces)
        compiled_for = getattr(self._parts[0], "batch", None) if self._parts else None
        return min(size, compiled_for) if compiled_for else size

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        early, late, _ = self._parts
        size = self.early_chunk_size(x)
        if size >= x.shape[0]:
            return late(early(x))
        return late(torch.cat([early(x[i : i + size]) for i in range(0, x.shape[0], size)]))

    def _autocast(self, device: torch.device):  # noqa: ANN202
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.options.precision)
        if dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=dtype)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if not self._parts:
            self.prepare()
        x = to_device(images, self.device)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def teacher_project(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → teacher projections z (B, D, h, w), unnormalised, fp32."""
        x = self._input(images)
        with torch.inference_mode(), self._autocast(self.device):
            z = self._parts[2](self._encode(x))
        return z.float()

    def encode_project(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) → (encoder features (B, C, h, w), projections z (B, D, h, w)), both fp32."""
        x = self._input(images)
        with torch.inference_mode(), self._autocast(self.device):
            feats = self._encode(x)
            z = self._parts[2](feats)
        return feats.float(), z.float()

    def infer_outputs(
        self, images: torch.Tensor, features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """As :func:`core.inference.teacher_outputs`: ``(z_norm (B, D, h, w), scores (B, K, h, w))``, fp32;
        with ``features`` (the signature of :func:`core.inference.teacher_outputs_with_features`), a third
        element: the encoder's feature map (B, C, h, w), fp32."""
        feats = None
        with torch.inference_mode():
            if features:
                feats, z = self.encode_project(images)
                feats = feats.contiguous()
            else:
                z = self.teacher_project(images)
            z = F.normalize(z, dim=1)  # (B, D, h, w)
            protos = F.normalize(self.grouping_k.slot_embed.weight.float(), dim=1)  # (K, D)
            # one GEMM over pixels: (B·h·w, D) @ (D, K), in the layout z already has
            zt = z.permute(0, 2, 3, 1)  # (B, h, w, D), contiguous when z is channels_last
            scores = torch.matmul(zt, protos.t()).permute(0, 3, 1, 2)  # (B, K, h, w)
            z_out = z.contiguous()
            scores = scores.contiguous()
        # plain (non-inference) tensors, so callers may use them anywhere (autograd-free copies)
        if features:
            return z_out.clone(), scores.clone(), feats.clone()
        return z_out.clone(), scores.clone()


#: ``early_chunk``: the largest early-stage activation of one chunk. glibc's malloc serves a block above its
#: mmap threshold (which adapts up to this, ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit) with a fresh mapping
#: that it unmaps on free, so every batch pays the page faults again; blocks below it are reused.
EARLY_CHUNK_BYTES = 32 * 2**20


class _Stage(nn.Module):
    """One of :class:`~core.encoder.ResNetTrunk`'s ``early`` / ``late`` halves, as a module to run or compile."""

    def __init__(self, trunk: nn.Module, part: str) -> None:
        super().__init__()
        self.trunk, self.part = trunk, part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.trunk, self.part)(x)


class _Compiled:
    """``module`` compiled by Inductor with freezing, static shapes and a batch padded up to the first
    batch's size; falls back to ``module`` itself (with one warning) when the first compilation fails, and
    so do the other runners of its group (the same machine cannot compile them either)."""

    @classmethod
    def group(cls, *parts: nn.Module | _Compiled) -> tuple[_Compiled, ...]:
        """Runners for the network's parts, falling back together (an already compiled part is kept)."""
        runners = [p if isinstance(p, cls) else cls(p) for p in parts]
        for r in runners:
            r.peers = runners
        return tuple(runners)

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.peers: list[_Compiled] = [self]
        # freezing is set in the Inductor config while compiling: passing compile(options={"freezing": True})
        # instead gave a slower model (docs/performance.md, Indexing)
        self.fn: Any = torch.compile(module, dynamic=False)
        self.batch: int | None = None  # the batch size compiled for

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.fn(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            return self.module(x)
        n = x.shape[0]
        if self.batch is not None and n < self.batch:
            fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
            pad = torch.cat([x, x.new_zeros((self.batch - n, *x.shape[1:]))])
            return self(pad.contiguous(memory_format=fmt) if fmt is not None else pad)[:n]
        if self.batch is not None:
            return self._run(x)
        try:
            out = self._run(x)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager module gives the same results
            logger.warning("torch.compile failed (%s: %s); running the model eagerly", type(e).__name__,
                           str(e).splitlines()[0][:200] if str(e) else "")  # fmt: skip
            for r in self.peers:
                r.fn = None
            return self.module(x)
        self.batch = n
        return out


#: ``compile=None`` (auto): compile (Inductor with freezing; its cost and gain are in docs/performance.md) when,
#: after the first batch, the rest of the job would still take longer than this eagerly. The time is measured
#: on the machine that runs the job, so the rule holds on fast and slow ones.
COMPILE_PAYBACK_S = 240.0


class CompilePlan:
    """When a job (index build, evaluation) compiles its model: ``mode`` True at once, False never, None
    (auto) after the first batch if :data:`COMPILE_PAYBACK_S` of eager work is left (CPU only: on a GPU the
    eager path is already fed by the loader, and compiling is an explicit choice). A model without
    :meth:`InferenceModel.compile_now` (the plain full model) is never compiled."""

    def __init__(self, model: Any, mode: bool | None, total: int, device: str | torch.device) -> None:
        self.model = model if hasattr(model, "compile_now") else None
        if mode and self.model is not None:
            self.model.compile_now()
        auto = mode is None and self.model is not None and not self.model.compiled
        self.pending = auto and torch.device(device).type == "cpu"
        self.total = total

    def after_first_batch(self, images: int, seconds: float, done: int) -> None:
        """Called after each batch with its size, its seconds and the images done so far; decides once."""
        if not self.pending or images <= 0:
            return
        self.pending = False
        left = seconds / images * (self.total - done)
        if left > COMPILE_PAYBACK_S:
            logger.info("compiling the model: about %.0f s of images left at the eager speed", left)
            self.model.compile_now()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a CPU tensor bound for CUDA is pinned and copied without blocking."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# -- loading --------------------------------------------------------------------------------------------


def _read_lazily(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict memory-mapped (tensors are read from disk only when touched); falls back to
    :func:`core.checkpoint.read_checkpoint` for files that cannot be mapped (legacy serialisation)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not mappable: the ordinary reader gives the proper error
        return read_checkpoint(p)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def teacher_state(ckpt: dict[str, Any]) -> tuple[SlotConConfig, dict[str, torch.Tensor]]:
    """(config, the teacher's tensors: ``encoder_k.*``, ``projector_k.*``, prototypes) of either format."""
    model = ckpt.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"no 'model' state dict in checkpoint (top-level keys: {sorted(ckpt)[:8]})")
    if ckpt.get("format") == FORMAT:
        state = model
        cfg = SlotConConfig.from_dict(ckpt["config"])
    else:
        state = {k.removeprefix("module."): v for k, v in model.items()}
        cfg = release_config(state, ckpt.get("args"))
    if _PROTOTYPES not in state or not any(k.startswith("encoder_k.") for k in state):
        raise CheckpointError(f"cannot group: missing {_PROTOTYPES} or the teacher encoder (encoder_k.*)")
    teacher = {k: v for k, v in state.items() if k.startswith(_TEACHER_PREFIXES) or k == _PROTOTYPES}
    return cfg, teacher


def _load_part(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    part = {k[len(prefix) :]: v.detach().clone() for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    for k in own:  # release files may lack num_batches_tracked (unused in eval mode)
        if k.endswith("num_batches_tracked") and k not in part:
            part[k] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(own) - set(part))
    unexpected = sorted(set(part) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{prefix}* mismatch: missing {missing[:6]}, unexpected {unexpected[:6]}")
    module.load_state_dict(part, strict=True, assign=True)


def inference_model_from_checkpoint(ckpt: dict[str, Any], options: InferOptions | None = None) -> InferenceModel:
    """An (unprepared, CPU) :class:`InferenceModel` from a loaded checkpoint dict of either format."""
    cfg, state = teacher_state(ckpt)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        encoder = ResNetTrunk(cfg.arch, width=cfg.width, stride16=cfg.stride16)
        projector = DenseProjector(encoder.num_channels, cfg.dim_hidden, cfg.dim_out)
    _load_part(encoder, state, "encoder_k.")
    _load_part(projector, state, "projector_k.")
    return InferenceModel(cfg, encoder, projector, state[_PROTOTYPES], options)


def inference_model_of(model: nn.Module, options: InferOptions | None = None) -> InferenceModel:
    """An (unprepared, CPU) :class:`InferenceModel` holding a copy of a full model's teacher (e.g. the
    evaluation's random-init baseline, which has no file); ``model`` itself is left unchanged."""
    model = getattr(model, "module", model)
    ckpt = {"format": FORMAT, "config": model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}  # fmt: skip
    return inference_model_from_checkpoint(ckpt, options)


def load_inference_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", options: InferOptions | None = None
) -> InferenceModel:
    """The prepared inference model of a checkpoint (own or release format) on ``device``.

    ``options`` default to ``InferOptions()``. Raises :class:`core.checkpoint.CheckpointError`
    for missing files, backbone-only or foreign checkpoints.
    """
    model = inference_model_from_checkpoint(_read_lazily(path), options)
    return model.prepare(device)


def inference_model_for(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    fused: bool = True,
    options: InferOptions | None = None,
) -> nn.Module:
    """The model the index build, evaluation and uploads use.

    ``fused=True``: :func:`load_inference_model` with ``options`` (teacher only, BN folded; None:
    ``InferOptions()``); ``fused=False``: the full :func:`core.checkpoint.load_model` (the plain reference
    path, for A/B runs; ``options`` do not apply to it).
    """
    if not fused:
        from core.checkpoint import load_model

        return load_model(path, device)
    return load_inference_model(path, device, options)
