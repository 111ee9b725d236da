"""The inference model (teacher only, BN folded, channels_last, inference_mode) equals the plain full model.

Checkpoints are real: a tiny SlotCon trained for a few steps (so the teacher's BatchNorm running statistics
and affine weights are far from their init and folding them is exercised), saved with the project's code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.checkpoint import CheckpointError, load_model, save_checkpoint, to_release_state
from core.infer_model import (
    InferenceModel,
    InferOptions,
    fold_batchnorm,
    inference_model_for,
    inference_model_of,
    load_inference_model,
)
from core.inference import teacher_outputs
from core.model import SlotCon

# the shared tiny config (ResNet-18 at 1/4 width), and a ResNet-50 (bottleneck blocks) at 1/8 width
ARCHS = {"resnet18": {}, "resnet50": dict(arch="resnet50", width=0.125)}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def trained(request, tmp_path_factory, make_trained_model) -> tuple[SlotCon, Path]:
    """(trained model, its own-format checkpoint)."""
    model = make_trained_model(**ARCHS[request.param])
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / f"{request.param}.pth", model, epoch=1, step=3)
    return model, path


def _images(seed: int = 7, b: int = 3, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g)


def assert_same_outputs(plain: tuple[torch.Tensor, torch.Tensor], fast: tuple[torch.Tensor, torch.Tensor]) -> None:
    """z and scores within 1e-4; the argmax prototype equal wherever the plain top two are not tied."""
    (z0, s0), (z1, s1) = plain, fast
    assert z1.shape == z0.shape and s1.shape == s0.shape
    torch.testing.assert_close(z1, z0, atol=1e-4, rtol=0)
    torch.testing.assert_close(s1, s0, atol=1e-4, rtol=0)
    top2 = s0.topk(2, dim=1).values
    untied = (top2[:, 0] - top2[:, 1]) > 1e-5
    assert untied.float().mean() > 0.9  # the comparison below is not vacuous
    assert torch.equal(s0.argmax(1)[untied], s1.argmax(1)[untied])


def test_training_moved_the_teacher_batchnorm(trained) -> None:
    """Guards the other tests: folding default BN (mean 0, var 1, γ 1, β 0) would prove nothing."""
    model, _ = trained
    bns = [m for m in model.encoder_k.modules() if isinstance(m, nn.BatchNorm2d)]
    bns += [m for m in model.projector_k.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.running_mean.abs().max() > 1e-3 for bn in bns)
    assert all((bn.running_var - 1).abs().max() > 1e-3 for bn in bns)
    assert any((bn.weight - 1).abs().max() > 1e-4 for bn in bns)


def test_fused_equals_plain_on_own_checkpoint(trained) -> None:
    _, path = trained
    plain, fast = load_model(path), load_inference_model(path)
    x = _images()
    assert_same_outputs(teacher_outputs(plain, x), teacher_outputs(fast, x))
    assert fast.options.fold_bn and fast.options.channels_last and fast.options.precision == "fp32"
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())


@pytest.mark.parametrize("options", [
    InferOptions(fold_bn=False, channels_last=False),
    InferOptions(fold_bn=True, channels_last=False),
    InferOptions(fold_bn=False, channels_last=True),
], ids=["unfolded-nchw", "folded-nchw", "unfolded-nhwc"])  # fmt: skip
def test_every_option_equals_plain(trained, options: InferOptions) -> None:
    _, path = trained
    x = _images(seed=3, b=2, size=80)  # a non-square-friendly size: 80 → 5×5 maps at stride 16
    fast = load_inference_model(path, options=options)
    assert_same_outputs(teacher_outputs(load_model(path), x), teacher_outputs(fast, x))


def test_early_stages_in_chunks_equal_the_whole_batch(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a chunk budget of two images, a batch of five runs the early stages on 2 + 2 + 1 images and gives
    the unchunked outputs and encoder features; both equal the plain model's."""
    import core.infer_model as infer_model

    _, path = trained
    x = _images(seed=5, b=5)
    whole = load_inference_model(path, options=InferOptions(early_chunk=False))
    chunked = load_inference_model(path, options=InferOptions())
    per_image = chunked.encoder_k.early_bytes(64, 64)
    monkeypatch.setattr(infer_model, "EARLY_CHUNK_BYTES", 2 * per_image + 1)
    seen: list[int] = []
    hook = chunked.encoder_k.layer1.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    got = chunked.infer_outputs(x, features=True)
    hook.remove()
    assert seen == [2, 2, 1] and chunked.early_chunk_size(x) == 2
    ref = whole.infer_outputs(x, features=True)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert_same_outputs(teacher_outputs(load_model(path), x), got[:2])


def test_early_chunk_size_keeps_each_chunk_under_the_mmap_ceiling() -> None:
    """ResNet-50 at 224 in fp32: 3.06 MiB per image in the stem and layer1, so at most 10 images under
    32 MiB; a batch is cut into the fewest equal chunks (32 → 4 × 8). Larger inputs get smaller chunks; a
    GPU, or the option off, runs the whole batch."""
    from core.encoder import ResNetTrunk
    from core.heads import DenseProjector
    from core.infer_model import EARLY_CHUNK_BYTES
    from core.model import SlotConConfig

    with torch.device("meta"):
        trunk = ResNetTrunk("resnet50")
        model = InferenceModel(SlotConConfig(arch="resnet50"), trunk, DenseProjector(2048, 64, 32),
                               torch.zeros(8, 32))  # fmt: skip
        assert trunk.early_bytes(224, 224) == 64 * 112 * 112 * 4 and EARLY_CHUNK_BYTES == 32 * 2**20
        sizes = {n: model.early_chunk_size(torch.empty(n, 3, 224, 224)) for n in (1, 8, 10, 11, 32, 64)}
        assert sizes == {1: 1, 8: 8, 10: 10, 11: 6, 32: 8, 64: 10}
        assert model.early_chunk_size(torch.empty(32, 3, 448, 448)) == 2
        for opts in (InferOptions(early_chunk=False), InferOptions().resolved(torch.device("cuda"))):
            model.options = opts
            assert model.early_chunk_size(torch.empty(32, 3, 224, 224)) == 32
    assert InferOptions().resolved(torch.device("cpu")).early_chunk


def test_fused_equals_plain_on_release_checkpoint(trained, tmp_path: Path) -> None:
    """The release's layout (``module.`` keys, ``args`` Namespace, optimiser state beside the model)."""
    model, _ = trained
    state = to_release_state(model)
    path = tmp_path / "release.pth"
    torch.save({**state, "optimizer": {}, "epoch": 800}, path)
    x = _images(seed=11)
    fast = load_inference_model(path)
    assert fast.config.arch == model.config.arch and fast.config.num_prototypes == 8
    assert_same_outputs(teacher_outputs(load_model(path), x), teacher_outputs(fast, x))


def test_teacher_only_load_reads_no_student(trained, tmp_path: Path) -> None:
    """A release file whose student tensors are unusable (wrong shapes) defeats the full load, not this one:
    the student, predictor and centre are never built or read."""
    model, _ = trained
    state = to_release_state(model)
    for k in list(state["model"]):
        if "_q." in k or "predictor" in k:
            state["model"][k] = torch.zeros(1)
    path = tmp_path / "bad_student.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError):
        load_model(path)
    fast = load_inference_model(path)
    names = {n.split(".")[0] for n, _ in fast.named_parameters()} | {n.split(".")[0] for n, _ in fast.named_buffers()}
    assert names == {"encoder_k", "projector_k", "grouping_k"}
    with torch.no_grad():
        ref = teacher_outputs(model, _images())
    assert_same_outputs(ref, teacher_outputs(fast, _images()))


def test_inference_model_of_a_live_model_and_the_switch(trained) -> None:
    model, path = trained
    x = _images(seed=5)
    ref = teacher_outputs(model, x)
    assert_same_outputs(ref, teacher_outputs(inference_model_of(model).prepare("cpu"), x))
    assert isinstance(inference_model_for(path), InferenceModel)
    assert isinstance(inference_model_for(path, fused=False), SlotCon)
    given = inference_model_for(path, options=InferOptions(fold_bn=False, channels_last=False)).options
    assert (given.fold_bn, given.channels_last, given.precision) == (False, False, "fp32")  # passed in, resolved


def test_outputs_are_ordinary_tensors(trained) -> None:
    """Inference-mode tensors cannot enter autograd or be modified in place later; the outputs are copies."""
    _, path = trained
    z, scores = teacher_outputs(load_inference_model(path), _images())
    assert not z.is_inference() and not scores.is_inference()
    assert z.is_contiguous() and scores.is_contiguous()
    scores.add_(0)  # would raise for an inference tensor outside inference mode


def test_fold_batchnorm_refuses_a_layout_it_does_not_know() -> None:
    odd = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))  # BN not right after a conv
    with pytest.raises(ValueError, match="not folded"):
        fold_batchnorm(odd)


def test_missing_and_backbone_only_files_are_refused(tmp_path: Path, trained) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_inference_model(tmp_path / "nope.pth")
    model, _ = trained
    backbone = {"model": {f"module.encoder_k.{k}": v for k, v in model.encoder_k.state_dict().items()}}
    torch.save(backbone, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError):
        load_inference_model(tmp_path / "backbone.pth")


# -- torch.compile (Inductor with frozen weights) -------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory, make_trained_model) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "r18.pth", make_trained_model(), epoch=1, step=3)


@pytest.mark.cxx
def test_compiled_equals_eager_and_pads_a_short_batch_without_recompiling(resnet18_checkpoint) -> None:
    """The compiled path gives the eager path's outputs; the last, shorter batch of a job is padded to the
    compiled size (one compilation per part), and its outputs equal an eager run on it alone."""
    from torch._dynamo.utils import counters

    eager = load_inference_model(resnet18_checkpoint, options=InferOptions())
    fast = load_inference_model(resnet18_checkpoint, options=InferOptions(compile=True))
    x = _images(b=4)
    out = fast.infer_outputs(x, features=True)
    assert fast.compiled and [p.batch for p in fast._parts] == [4, 4, 4]
    ref = eager.infer_outputs(x, features=True)
    assert_same_outputs(ref[:2], out[:2])
    torch.testing.assert_close(out[2], ref[2], atol=1e-4, rtol=0)  # the encoder features too
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0  # dynamo counts its graphs here, so the check below is not vacuous
    short = _images(seed=8, b=3)
    got = fast.infer_outputs(short, features=True)
    assert counters["stats"]["unique_graphs"] == graphs  # padded, not compiled again
    assert got[0].shape[0] == 3 and [p.batch for p in fast._parts] == [4, 4, 4]
    assert_same_outputs(eager.infer_outputs(short), got[:2])


@pytest.mark.cxx
def test_compiled_chunks_pad_the_last_chunk_without_recompiling(resnet18_checkpoint, monkeypatch) -> None:
    """Compiled early stages are compiled for the first batch's chunk; a later batch is cut into chunks of
    that size at most, the last one padded: no second compilation, the eager outputs."""
    from torch._dynamo.utils import counters

    import core.infer_model as infer_model

    eager = load_inference_model(resnet18_checkpoint, options=InferOptions(early_chunk=False))
    fast = load_inference_model(resnet18_checkpoint, options=InferOptions(compile=True))
    monkeypatch.setattr(infer_model, "EARLY_CHUNK_BYTES", 2 * fast.encoder_k.early_bytes(64, 64))
    x = _images(seed=12, b=4)
    out = fast.infer_outputs(x, features=True)
    assert [p.batch for p in fast._parts] == [2, 4, 4]
    torch.testing.assert_close(out[2], eager.infer_outputs(x, features=True)[2], atol=1e-4, rtol=0)
    graphs = counters["stats"]["unique_graphs"]
    later = _images(seed=13, b=3)  # chunks of 2 and 1 (padded to 2); late stages padded from 3 to 4
    got = fast.infer_outputs(later, features=True)
    assert counters["stats"]["unique_graphs"] == graphs and fast.compiled
    assert_same_outputs(eager.infer_outputs(later), got[:2])


def test_a_failing_compiler_falls_back_to_eager(resnet18_checkpoint, caplog, tmp_path, monkeypatch) -> None:
    """A machine without a working C++ compiler (here: one that does not exist) still indexes, eagerly.
    The kernels must really be compiled: an empty Inductor cache, and a shape no other test compiles (static
    shapes are baked into the kernels, which are cached by their source, in memory and on disk)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    fast = load_inference_model(resnet18_checkpoint, options=InferOptions()).compile_now()
    x = _images(seed=9, b=3, size=72)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False, "cpp_wrapper": True}):
        out = fast.infer_outputs(x)
    assert not fast.compiled and "torch.compile failed" in caplog.text
    assert_same_outputs(load_inference_model(resnet18_checkpoint).infer_outputs(x), out)
