"""The cluster probe: a checkpoint whose K differs from the class count scored with one cluster per class.

One-to-one Hungarian matching of K ≠ C prototypes to C classes counts the pixels of unmatched prototypes
wrong (K > C) or leaves classes without a cluster (K < C), so a K = 256 checkpoint cannot be set beside a
K = 27 paper row. The probe (STEGO's cluster probe, fitted by k-means instead of by gradient) clusters the
teacher's features into C groups and matches those one-to-one:

1. features: the teacher's L2-normalised projections ``z`` (B, D, h, w) of every evaluated image,
   bilinearly resized to the evaluated crop (res × res, ``align_corners=False`` as the scores are) and
   normalised again per pixel;
2. k-means with C centres (FAISS, spherical: centres kept on the unit sphere, so the nearest centre is the
   most cosine-similar one) over those pixel features, all of them when they number at most ``max_points``,
   else an equal random share of each image's pixels, computed at those pixels only (labels are never read
   for the fit);
3. each pixel goes to its nearest centre, computed as the prototypes' scores are: cosines of ``z`` with the
   centres at feature resolution, bilinearly resized, argmax (the same as the nearest centre of the
   resized, renormalised feature, since resizing is linear and renormalising scales all C cosines alike);
4. the C × C confusion over the set, one-to-one Hungarian (:func:`indexer.unsupervised.scores_from_confusion`).

K-means depends on its seed (STEGO's cluster-probe scores move with it), so the probe runs several seeds
over the same feature sample (drawn with a fixed generator, so a seed's run is the same alone or among
others) and reports each one's scores (the caller reports their mean and standard deviation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from core.inference import assign
from core.recipes import IGNORE_LABEL
from indexer.unsupervised import ConfusionAccumulator

#: K-means iterations (FAISS's default is 25; the probe's features are low-dimensional enough to settle).
NITER = 25
#: At most this many pixel features are clustered (an equal share of each image beyond it).
MAX_POINTS = 100_000


def pixel_features(z: torch.Tensor, resolution: int) -> torch.Tensor:
    """(res·res, D) unit vectors: one image's normalised projections ``z`` (D, h, w) bilinearly resized
    to ``resolution``² and renormalised, in row-major pixel order."""
    up = F.interpolate(z[None].float(), size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    return F.normalize(up.flatten(1).t(), dim=1)


def resize_weights(size: int, resolution: int) -> torch.Tensor:
    """(resolution, size) weights of 1-D linear resizing (``align_corners=False``, as ``F.interpolate``):
    row o holds the weights output pixel o gives the ``size`` input pixels."""
    eye = torch.eye(size)[None]  # (1, size, size): one basis signal per channel
    return F.interpolate(eye, size=resolution, mode="linear", align_corners=False)[0].t().contiguous()


def sampled_pixel_features(z: torch.Tensor, resolution: int, pixels: np.ndarray) -> torch.Tensor:
    """(n, D) unit vectors: :func:`pixel_features` at the row-major pixel indices ``pixels`` only, from the
    same separable bilinear weights (equal up to float rounding, without resizing every channel)."""
    d, h, w = z.shape
    ys, xs = torch.from_numpy(pixels // resolution), torch.from_numpy(pixels % resolution)
    wy, wx = resize_weights(h, resolution)[ys], resize_weights(w, resolution)[xs]  # (n, h), (n, w)
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(pixels), h * w)  # (n, h·w)
    return F.normalize(weights @ z.float().reshape(d, h * w).t(), dim=1)  # (n, D)


def fit_centres(points: np.ndarray, k: int, seed: int, niter: int = NITER) -> np.ndarray:
    """(k, D) float32 unit centres of spherical k-means (FAISS) over ``points`` (N, D) with ``seed``; every
    point is used (no FAISS subsampling)."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
        min_points_per_centroid=1, max_points_per_centroid=max(1, math.ceil(len(x) / k)),
    )  # fmt: skip
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


@dataclass
class ProbeRun:
    """One seed of the probe: its centres and the C × C confusion of its clusters against the classes."""

    seed: int
    centres: np.ndarray
    confusion: ConfusionAccumulator


class ClusterProbe:
    """Collects the evaluated images' projections and labels as the evaluation streams them (:meth:`add`),
    then fits and scores the probe for each seed (:meth:`run`).

    Memory: the projections at feature resolution (D·h·w floats an image) and the label crops (res² bytes);
    for the 2,175 curated COCO images with a ResNet-50 at 320 px (10 × 10, D = 256) about 450 MB.
    """

    def __init__(
        self,
        num_classes: int,
        resolution: int,
        num_images: int,
        sample_seed: int = 0,
        max_points: int = MAX_POINTS,
        ignore_index: int = IGNORE_LABEL,
    ) -> None:
        self.num_classes, self.res, self.ignore_index = num_classes, resolution, ignore_index
        self.per_image = max(1, math.ceil(max_points / max(1, num_images)))
        self.rng = np.random.default_rng(sample_seed)
        self.maps: list[torch.Tensor] = []
        self.labels: list[np.ndarray] = []
        self.samples: list[np.ndarray] = []

    def add(self, z: torch.Tensor, labels: list[np.ndarray]) -> None:
        """Adds a batch: ``z`` (B, D, h, w) normalised projections and the B label crops (res, res)."""
        for zi, lab in zip(z.float().cpu(), labels, strict=True):
            self.maps.append(zi.clone())
            self.labels.append(lab)
            total = self.res * self.res
            if total <= self.per_image:
                self.samples.append(pixel_features(zi, self.res).numpy())
            else:
                pick = np.sort(self.rng.choice(total, size=self.per_image, replace=False))
                self.samples.append(sampled_pixel_features(zi, self.res, pick).numpy())

    def predict(self, centres: np.ndarray, batch: int = 32) -> list[np.ndarray]:
        """Each collected image's (res, res) cluster map under ``centres`` (k, D unit vectors)."""
        c = torch.from_numpy(centres)
        out = []
        for lo in range(0, len(self.maps), batch):
            z = torch.stack(self.maps[lo : lo + batch])  # (B, D, h, w)
            scores = torch.einsum("bdhw,kd->bkhw", z, c)  # (B, k, h, w)
            out += list(assign(scores, (self.res, self.res)).numpy())
        return out

    def run(self, seeds: list[int]) -> list[ProbeRun]:
        """Fits the probe with each seed over the same feature sample and accumulates its confusion.
        ValueError when no image was added."""
        if not self.samples:
            raise ValueError("the cluster probe saw no image")
        points = np.concatenate(self.samples)
        runs = []
        for seed in seeds:
            centres = fit_centres(points, self.num_classes, seed)
            acc = ConfusionAccumulator(self.num_classes, num_clusters=self.num_classes, ignore_index=self.ignore_index)
            for pred, lab in zip(self.predict(centres), self.labels, strict=True):
                acc.update(pred, lab)
            runs.append(ProbeRun(seed, centres, acc))
        return runs
