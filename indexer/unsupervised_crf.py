"""Optional dense-CRF post-processing of the prototype maps (STEGO's ``run_crf``), off by default.

STEGO-family results refine each prediction with a fully connected CRF (Krähenbühl & Koltun) before
matching; SlotCon's Table 5 and PiCIE do not, so a CRF score is tagged ``crf`` and is never set beside the
paper's row as a comparison. The settings are STEGO's (``crf.py``): unaries from the softmax of the logits
bilinearly resized to the image, a Gaussian pairwise term (``sxy`` 1, compat 3), a bilateral one (``sxy``
67, ``srgb`` 3, compat 4) on the image's 8-bit colours, 10 mean-field iterations. The logits are the
prototype cosines times 2, as STEGO's cluster probe hands its cosines to the CRF (``log_softmax(2 · cos)``).

``pydensecrf2`` builds from source (Cython and a C++ compiler): ``pip install -e .[crf]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: STEGO's CRF settings (crf.py): iterations, Gaussian (sxy, compat), bilateral (sxy, srgb, compat).
MAX_ITER = 10
POS_XY_STD, POS_W = 1, 3
BI_XY_STD, BI_RGB_STD, BI_W = 67, 3, 4
#: STEGO's scale of the cosines before the softmax (its cluster probe's ``alpha``).
LOGIT_SCALE = 2.0
INSTALL_HINT = "dense-CRF post-processing needs pydensecrf2: pip install -e '.[crf]' (builds from source)"


def crf_available() -> bool:
    """Whether ``pydensecrf`` (the ``pydensecrf2`` package) imports."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


class CrfUnavailableError(RuntimeError):
    """The dense CRF was asked for where ``pydensecrf2`` is not installed."""


def require_crf() -> None:
    """Raises :class:`CrfUnavailableError` with the install hint when the CRF cannot run."""
    if not crf_available():
        raise CrfUnavailableError(INSTALL_HINT)


def dense_crf(image: np.ndarray, logits: torch.Tensor, iterations: int = MAX_ITER) -> np.ndarray:
    """STEGO's ``dense_crf``: (K, H, W) float32 marginals of the CRF over ``image`` ((H, W, 3) uint8 RGB),
    with unaries from the softmax of ``logits`` ((K, h, w), bilinearly resized to H × W)."""
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as crf_utils

    h, w = image.shape[:2]
    logits = F.interpolate(logits[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
    probs = F.softmax(logits, dim=0).cpu().numpy()
    k = probs.shape[0]
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(crf_utils.unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=POS_XY_STD, compat=POS_W)
    crf.addPairwiseBilateral(sxy=BI_XY_STD, srgb=BI_RGB_STD, rgbim=np.ascontiguousarray(image), compat=BI_W)
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(k, h, w)


def crf_assign(rgb: torch.Tensor, scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, H, W) int64 cluster maps after the CRF: ``rgb`` (B, 3, H, W) in [0, 1] (the evaluated crops),
    ``scores`` (B, K, h, w) the prototype cosines, scaled by :data:`LOGIT_SCALE`."""
    out = []
    for img, s in zip(rgb, scores, strict=True):
        pixels = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        assert pixels.shape[:2] == tuple(size), (pixels.shape, size)
        out.append(dense_crf(pixels, LOGIT_SCALE * s).argmax(0))
    return np.stack(out).astype(np.int64)
