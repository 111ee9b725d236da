"""Dense-CRF post-processing (STEGO's run_crf), an optional extra: tagged when on, refused with the install
hint where pydensecrf2 is missing; its own tests skip there, saying so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.eval_cli import main as eval_main
from indexer.evaluate import EvalConfig, run_eval
from indexer.unsupervised_crf import INSTALL_HINT, CrfUnavailableError, crf_assign, crf_available, dense_crf

needs_crf = pytest.mark.skipif(not crf_available(), reason="pydensecrf2 is not installed (pip install -e '.[crf]')")


@pytest.mark.skipif(crf_available(), reason="pydensecrf2 is installed: the refusal cannot happen")
def test_asking_for_the_crf_without_it_is_refused(synthetic_root: Path, tiny_checkpoint: Path, capsys) -> None:
    with pytest.raises(CrfUnavailableError, match="pydensecrf2"):
        run_eval(EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=32, limit=1, crf=True))
    args = ["--checkpoint", str(tiny_checkpoint), "--data", str(synthetic_root), "--protocol", "synthetic",
            "--limit", "1", "--workers", "0", "--no-progress", "--crf"]  # fmt: skip
    assert eval_main(args) == 2 and INSTALL_HINT in capsys.readouterr().err


def _two_regions(size: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    """A dark left half and a bright right half; logits that favour the right label everywhere except a
    3 × 3 patch of wrong, weakly held pixels inside each half."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, size // 2 :] = 255
    logits = torch.zeros(2, size, size)
    logits[0, :, : size // 2] = 1.0
    logits[1, :, size // 2 :] = 1.0
    for y, x, wrong in ((8, 6, 1), (20, 24, 0)):
        logits[:, y : y + 3, x : x + 3] = 0.0
        logits[wrong, y : y + 3, x : x + 3] = 0.3
    return image, logits


@needs_crf
def test_dense_crf_gives_marginals_that_follow_the_image() -> None:
    image, logits = _two_regions()
    q = dense_crf(image, logits)
    assert q.shape == (2, 32, 32) and np.allclose(q.sum(0), 1.0, atol=1e-4)
    raw = logits.argmax(0).numpy()
    assert (raw[8:11, 6:9] == 1).all()  # the wrong patch before the CRF
    labels = q.argmax(0)
    assert (labels[:, :16] == 0).all() and (labels[:, 16:] == 1).all()  # the CRF follows the two regions


@needs_crf
def test_a_crf_evaluation_is_tagged(synthetic_root: Path, tiny_checkpoint: Path) -> None:
    r = run_eval(EvalConfig(tiny_checkpoint, synthetic_root, "synthetic", resolution=32, limit=2, crf=True, seeds=1))
    one, many, probe = r.scores
    assert one.tag.crf and many.tag.crf and not probe.tag.crf and r.protocol.crf
    assert "CRF" in [d.field for d in one.paper.differences] and " · CRF · " in one.tag.label
    rgb = torch.rand(1, 3, 32, 32)
    assert crf_assign(rgb, torch.randn(1, 8, 4, 4), (32, 32)).shape == (1, 32, 32)
