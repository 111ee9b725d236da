"""The typed documents the indexer hands to the other packages: an index's :class:`Manifest`, its slot
:class:`Stats` and an unsupervised-segmentation :class:`EvalResult`.

Each is a dataclass with ``from_dict``/``to_dict`` (the JSON written to ``manifest.json``, the
``stats`` table and the ``evaluations`` table) and ``load``/``save``. The server's response models
mirror them field for field (``server/schemas.py``; tests/server/test_schema_mirror.py), so the UI
reads exactly what the indexer writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _build(tp: Any, value: Any) -> Any:
    """``value`` (parsed JSON) as an instance of the annotation ``tp`` (dataclasses built recursively)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner, value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_build(inner, v) for v in value]
    if origin is dict:
        _, inner = typing.get_args(tp)
        return {k: _build(inner, v) for k, v in value.items()}
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """An instance of the dataclass ``cls`` from its JSON form; unknown keys are ignored, missing keys
    take the field's default (a missing key without one raises KeyError naming it)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            values[f.name] = _build(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f"{cls.__name__}: missing {f.name!r}")
    return cls(**values)


class _Document:
    """``from_dict`` / ``to_dict`` for the dataclasses below."""

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Builds the document from its JSON form (see :func:`from_dict`)."""
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts and lists)."""
        return asdict(self)  # type: ignore[call-overload]


def _write_json_atomic(path: Path, obj: Any) -> None:
    from indexer.progress import write_json_atomic

    write_json_atomic(path, obj)


# ---------------------------------------------------------------- manifest.json
@dataclass(frozen=True)
class CheckpointRef(_Document):
    """The checkpoint a document was made from: its path when it was made, and its content hash."""

    path: str
    sha256: str


@dataclass(frozen=True)
class DataRef(_Document):
    """The images indexed: the dataset root and the split folder (None: the root itself)."""

    root: str
    split: str | None


@dataclass(frozen=True)
class FaissInfo(_Document):
    """The FAISS index: the requested type (flat, ivf, ivfpq) and the factory string built."""

    type: str
    spec: str


@dataclass(frozen=True)
class LabelInfo(_Document):
    """The label maps the purity was computed from."""

    protocol: str
    class_names: list[str]


@dataclass(frozen=True)
class IndexCounts(_Document):
    """What the index holds."""

    images: int
    segments: int
    skipped: int
    dead_prototypes: int = 0
    label_problems: int = 0


@dataclass(frozen=True)
class EncoderVectors(_Document):
    """The index's second embedding of its segments: the teacher encoder's features pooled over each segment
    (pre-projector, dimension ``dim``), stored in ``segments_encoder.faiss`` with the segments' ids, centred
    on their mean (``segments_encoder_mean.npy``) and re-normalised when ``centred``."""

    dim: int
    faiss: FaissInfo
    centred: bool = True


#: The embeddings a neighbour search can use: the projector's (what the prototypes score, always there)
#: and the encoder's pooled features (when the index stores them, :class:`EncoderVectors`).
SPACES = ("projector", "encoder")


@dataclass(frozen=True)
class Manifest(_Document):
    """``manifest.json`` of an index directory (written by :func:`indexer.build.build_index`)."""

    version: int
    checkpoint: CheckpointRef
    data: DataRef
    resize: int
    crop: int
    dim: int
    num_prototypes: int
    model: dict[str, Any]
    faiss: FaissInfo
    labels: LabelInfo | None
    counts: IndexCounts
    world_size: int = 1
    built_at: str = ""
    build_seconds: float = 0.0
    host: str = ""
    encoder: EncoderVectors | None = None
    #: how the model ran: "plain" (the full model) or "fused" with its options, e.g.
    #: "fused fold_bn channels_last early_chunk fp32" (core.infer_model); "" in manifests written before it was recorded
    inference: str = ""

    @classmethod
    def load(cls, index_dir: str | os.PathLike) -> Manifest:
        """The manifest of ``index_dir`` (OSError, ValueError, KeyError or TypeError when unreadable)."""
        from indexer.schema import MANIFEST_NAME

        return cls.from_dict(json.loads((Path(index_dir) / MANIFEST_NAME).read_text()))

    def save(self, index_dir: str | os.PathLike) -> None:
        """Writes ``index_dir/manifest.json`` atomically."""
        from indexer.schema import MANIFEST_NAME

        _write_json_atomic(Path(index_dir) / MANIFEST_NAME, self.to_dict())


# ---------------------------------------------------------------- slot statistics
@dataclass(frozen=True)
class ActivePerImage(_Document):
    """Prototypes active per image; ``histogram[n]`` = images with n active prototypes."""

    mean: float
    median: float
    min: int
    max: int
    histogram: list[int]


@dataclass(frozen=True)
class PerPrototype(_Document):
    """Per prototype (lists of length K): images where active, segments, pixel and image shares."""

    images: list[int]
    segments: list[int]
    pixel_share: list[float]
    image_share: list[float]


@dataclass(frozen=True)
class LongTail(_Document):
    """Prototype ids by pixel share (descending) and the cumulative share."""

    order: list[int]
    cumulative_pixel_share: list[float]


@dataclass(frozen=True)
class Activity(_Document):
    """A prototype and the number of images where it is active."""

    id: int
    images: int


@dataclass(frozen=True)
class DuplicatePair(_Document):
    """Two prototypes (a < b) and the cosine of their vectors."""

    a: int
    b: int
    cosine: float


@dataclass(frozen=True)
class Stats(_Document):
    """The slot statistics of an index (:func:`indexer.stats.compute_stats`); ``near_duplicates`` are
    the pairs with a cosine above ``duplicate_threshold``."""

    num_images: int
    num_segments: int
    num_prototypes: int
    num_dead: int
    num_alive: int
    dead: list[int]
    skipped_images: int
    active_per_image: ActivePerImage
    per_prototype: PerPrototype
    long_tail: LongTail
    most_active: list[Activity]
    least_active: list[Activity]
    near_duplicates: list[DuplicatePair]
    duplicate_threshold: float


# ---------------------------------------------------------------- unsupervised segmentation
@dataclass(frozen=True)
class ImageList(_Document):
    """The images a score was measured on (``indexer.evaluate_images``): the list's ``name`` (the shipped
    curated list's, a user list's file name, or ``all-<split>``), the images it names (``listed``; for
    ``all-<split>``: the images found), those of them not in the data root (``missing``) and the images
    the score counts (``used``: listed, present, readable, within ``--limit``)."""

    name: str
    used: int
    listed: int
    missing: int = 0


@dataclass(frozen=True)
class ScoreTag(_Document):
    """How a score was measured (``indexer.evaluate_tag``): the benchmark, its image list, K (the clusters
    the method predicts: the checkpoint's prototypes or the k-means centres), the matching
    (``one-to-one``, ``many-to-one`` or ``cluster-probe``), the resolution and crop, CRF or not, and the
    number of seeds averaged (1: one run). ``label`` says it in words."""

    benchmark: str
    image_list: ImageList
    k: int
    matching: str
    resolution: int
    crop: str
    crf: bool
    seeds: int
    label: str = ""


@dataclass(frozen=True)
class TagDifference(_Document):
    """One field in which a score's tag differs from a reference's: the field and both values in words."""

    field: str
    ours: str
    reference: str


@dataclass(frozen=True)
class ReferenceCheck(_Document):
    """A score against a published row: ``comparable`` only when the two tags agree on every field;
    otherwise the row is a reference line and ``differences`` names what differs."""

    reference: str
    comparable: bool
    differences: list[TagDifference] = field(default_factory=list)


@dataclass(frozen=True)
class SeedRun(_Document):
    """One seeded run of a score (fractions in [0, 1])."""

    seed: int
    miou: float | None
    pixel_accuracy: float | None


@dataclass(frozen=True)
class Score(_Document):
    """One score of an evaluation, side by side with the others: ``miou`` and ``pixel_accuracy`` are the
    mean over the seeded ``runs`` (fractions; a trained model's own scores involve no seed and list none),
    ``*_std`` their sample standard deviation (None for one run), ``tag`` how it was measured and ``paper``
    whether the paper's row may be drawn beside it."""

    method: str
    matching: str
    miou: float | None
    pixel_accuracy: float | None
    tag: ScoreTag
    paper: ReferenceCheck
    miou_std: float | None = None
    pixel_accuracy_std: float | None = None
    runs: list[SeedRun] = field(default_factory=list)


@dataclass(frozen=True)
class ReferenceScore(_Document):
    """A published score with its own tag (the paper's row)."""

    name: str
    source: str
    miou: float
    pixel_accuracy: float
    tag: ScoreTag


@dataclass(frozen=True)
class ManyToOne(_Document):
    """Scores when every cluster is mapped to its majority class."""

    miou: float | None
    pixel_accuracy: float | None
    per_class_iou: list[float | None]
    mapping: list[int | None]
    label: str
    tag: ScoreTag | None = None


@dataclass(frozen=True)
class EvalCounts(_Document):
    """Pixel and image counts of an evaluation."""

    num_clusters: int
    num_classes: int
    labelled_pixels: int
    class_pixels: list[int]
    matched_correct_pixels: int
    unmatched_cluster_pixels: int
    unmatched_clusters: int
    num_images: int = 0
    ignored_pixels: int = 0
    out_of_range_pixels: int = 0
    skipped_images: int = 0
    evaluated_images: int = 0


@dataclass(frozen=True)
class EvalProtocol(_Document):
    """The choices an evaluation made."""

    name: str
    split: str | None
    resolution: int
    preprocessing: str
    prediction: str
    curated_list: str | None
    subset: str
    num_clusters: int
    num_classes: int
    unmatched_clusters: str
    crop: str = "centre"
    crf: bool = False
    seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedImage(_Document):
    """An image the evaluation could not use, and why."""

    file_name: str
    reason: str


@dataclass(frozen=True)
class ClassScore(_Document):
    """One class of an evaluation: its IoU under the Hungarian matching (None: undefined) and pixels."""

    name: str
    iou: float | None
    pixels: int


@dataclass(frozen=True)
class ObjectDiscoveryExample(_Document):
    """One image of an object-discovery evaluation, kept as a best or worst example: its scores, instance
    count, and base64 palette PNGs of its slot map (pixel = prototype) and instance map (0 = no instance)."""

    image_id: int
    file_name: str
    fg_ari: float | None
    mbo: float
    instances: int
    slots_png: str
    instances_png: str


@dataclass(frozen=True)
class ObjectDiscoveryResult(_Document):
    """Slots against instance masks (``indexer.evaluate_objects``): ``fg_ari`` (mean over the ``fg_ari_images``
    images with a foreground pixel), ``mbo_image`` (mean over the ``images`` with an instance of their mean best
    overlap) and ``mbo_instance`` (mean over all ``instances``), fractions in [0, 1]; the tag; the best and
    worst images."""

    fg_ari: float | None
    mbo_image: float | None
    mbo_instance: float | None
    images: int
    instances: int
    fg_ari_images: int = 0
    images_without_instances: int = 0
    crowd_instances: int = 0
    tag: ScoreTag | None = None
    best: list[ObjectDiscoveryExample] = field(default_factory=list)
    worst: list[ObjectDiscoveryExample] = field(default_factory=list)


@dataclass(frozen=True)
class DissectionPrototype(_Document):
    """One prototype dissected: its IoU with every class (``iou``, in the classes' order), the best class
    (None for a prototype with no labelled pixel), that IoU, and the labelled pixels it covers."""

    prototype: int
    best_class: int | None
    best_class_name: str | None
    best_iou: float
    pixels: int
    iou: list[float]


@dataclass(frozen=True)
class DissectionResult(_Document):
    """Every prototype against every labelled class (``indexer.evaluate_objects``): per prototype its IoU row
    and best class; ``classes_found``: the classes some prototype overlaps with IoU above ``threshold``."""

    threshold: float
    classes_found: int
    found_classes: list[str]
    num_classes: int
    class_names: list[str]
    class_best_iou: list[float]
    prototypes: list[DissectionPrototype]
    tag: ScoreTag | None = None


@dataclass(frozen=True)
class EvalResult(_Document):
    """One unsupervised-segmentation evaluation (:func:`indexer.evaluate.run_eval`): Hungarian-matched
    scores as fractions, the cluster × class ``confusion`` and, folded through the ``matching``, the
    ``matched_confusion`` (ground-truth class × predicted class, plus a last column for the pixels of
    clusters matched to no class), the ``per_class`` table and the many-to-one scores."""

    miou: float | None
    pixel_accuracy: float | None
    per_class_iou: list[float | None]
    matching: list[int | None]
    matched_pairs: list[list[int]]
    confusion: list[list[int]]
    many_to_one: ManyToOne
    counts: EvalCounts
    class_names: list[str]
    matched_confusion: list[list[int]]
    per_class: list[ClassScore]
    protocol: EvalProtocol
    baseline: str
    checkpoint: CheckpointRef | None
    data_root: str
    seconds: float
    per_class_iou_named: dict[str, float | None] = field(default_factory=dict)
    skipped: list[SkippedImage] = field(default_factory=list)
    eval_id: int | None = None
    confusion_layout: str = "clusters x classes"
    matching_method: str = ""
    unmatched_clusters_counted_wrong: bool = True
    tag: ScoreTag | None = None
    scores: list[Score] = field(default_factory=list)
    image_list: ImageList | None = None
    missing_images: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["segmentation"])
    object_discovery: ObjectDiscoveryResult | None = None
    dissection: DissectionResult | None = None

    def save(self, path: str | os.PathLike) -> None:
        """Writes the result's JSON to ``path`` atomically."""
        _write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalResult:
        """The result stored at ``path``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class StoredEval(_Document):
    """An evaluation stored in an index: its id, when it was stored, and the result."""

    id: int
    created_at: str
    result: EvalResult


__all__ = [
    "ActivePerImage", "Activity", "CheckpointRef", "ClassScore", "DataRef", "DissectionPrototype",
    "DissectionResult", "DuplicatePair", "EvalCounts",
    "EvalProtocol", "EvalResult", "FaissInfo", "ImageList", "IndexCounts", "LabelInfo", "LongTail", "Manifest",
    "ManyToOne", "ObjectDiscoveryExample", "ObjectDiscoveryResult", "PerPrototype",
    "ReferenceCheck", "ReferenceScore", "Score", "ScoreTag", "SeedRun",
    "SkippedImage", "Stats", "StoredEval", "TagDifference", "from_dict",
]  # fmt: skip
