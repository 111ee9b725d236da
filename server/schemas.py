"""Pydantic models of every request and response body (the OpenAPI schema the UI codes against).

List answers are envelopes ``{"items": [...], ...}``; images inside JSON are base64 PNG strings.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from core import recipes, train_fields
from indexer import compare as indexer_compare
from indexer import types as indexer_types
from indexer.evaluate_objects import DISSECTION_THRESHOLD
from indexer.evaluate_objects import METRICS as EVAL_METRICS
from indexer.evaluate_tag import EVAL_SEEDS
from server.mirror import StrictModel, mirror
from server.services.prototype_list import SORTS as PROTOTYPE_SORTS

#: The largest id or offset a route accepts: SQLite's INTEGER range (larger numbers are a 422, not a 500).
MAX_ID = 2**63 - 1
MAX_OFFSET = 2**31 - 1
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, _ and -")]
Base64Png = Annotated[str, Field(description="a PNG, base64-encoded (no data: prefix)")]
#: The choices of the requests, from :mod:`core.recipes` (one source for the trainer, the server and the UI).
PresetName = Literal[tuple(recipes.PRESETS)]  # type: ignore[valid-type]
Protocol = Literal[recipes.PROTOCOLS]  # type: ignore[valid-type]
Baseline = Literal[recipes.BASELINES]  # type: ignore[valid-type]
EvalSplit = Literal[recipes.EVAL_SPLITS]  # type: ignore[valid-type]
EvalMetric = Literal[EVAL_METRICS]  # type: ignore[valid-type]
Precision = Literal[recipes.PRECISIONS]  # type: ignore[valid-type]


#: JSON values of the open-ended records the API passes on (training metrics, job and run configs).
JsonScalar = str | int | float | bool | None
JsonField = JsonScalar | list[JsonScalar] | dict[str, JsonScalar | list[JsonScalar]]
Record = dict[str, JsonField]


#: A neighbour-search embedding: the teacher's projections, or the encoder's features pooled per segment.
Space = Literal[indexer_types.SPACES]  # type: ignore[valid-type]  # ("projector", "encoder"): one list


class ValidationIssue(BaseModel):
    """One problem with a request (a 422's ``details``)."""

    loc: list[str | int] = Field(description="where: 'body'/'query'/'path' then the field")
    msg: str
    type: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, no_index, upload_too_large")
    message: str
    details: list[ValidationIssue] | None = Field(None, description="a 422's problems, one per field")


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message"}}`` with the HTTP status."""

    error: ErrorDetail


class Rle(BaseModel):
    """A COCO RLE mask (decode with ``pycocotools.mask.decode``)."""

    size: list[int] = Field(description="[height, width]")
    counts: str


# ---------------------------------------------------------------- health
class CheckpointInfo(BaseModel):
    name: str = Field(description="file name (no directory)")
    sha256: str
    arch: str | None = None
    num_prototypes: int | None = None


class IndexInfo(BaseModel):
    name: str = Field(description="the index directory's name")
    build: str = Field("", description="the build id: a hash of its manifest (a rebuild under its name changes it)")
    checkpoint_sha256: str | None = None
    num_images: int
    num_segments: int
    num_prototypes: int
    dim: int
    split: str | None = None
    resize: int | None = None
    crop: int | None = None
    built_at: str | None = None
    spaces: list[Space] = Field(
        default_factory=lambda: ["projector"],
        description="embeddings its neighbour search can use: 'projector' (what the prototypes score) and, "
        "when stored, 'encoder' (the backbone's features pooled per segment)",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    device: str
    checkpoint: CheckpointInfo | None = Field(None, description="the model used for uploads, if any")
    index: IndexInfo | None = Field(None, description="null when the server runs without an index")
    index_error: str | None = Field(None, description="why the configured index could not be loaded")
    running_jobs: int
    auth_required: bool = Field(description="mutating routes need 'Authorization: Bearer <token>'")


# ---------------------------------------------------------------- prototypes
class Prototype(BaseModel):
    id: int
    num_images: int = Field(description="images on which the prototype is active")
    num_segments: int
    pixel_share: float = Field(description="share of all indexed pixels assigned to it")
    dead: bool = Field(description="active on no image of the index")
    label: str | None = Field(None, description="the user's name for the concept")
    purity: float | None = Field(None, description="share of its labelled pixels in its majority class")
    majority_class_id: int | None = Field(None, description="the class most of its labelled pixels belong to")
    majority_class_name: str | None = None
    best_segment_id: int | None = None
    best_image_id: int | None = None
    color: list[int] = Field(description="[r, g, b] of the prototype in the all-slots overlays")


PrototypeSort = Literal[tuple(PROTOTYPE_SORTS)]  # type: ignore[valid-type]


class PrototypeList(BaseModel):
    """One page of the prototypes the filters keep, in the requested order."""

    items: list[Prototype]
    total: int = Field(description="prototypes the filters keep (all K without filters): the pager's length")
    offset: int = 0
    num_prototypes: int = Field(description="K, the index's prototype count")
    num_dead: int = Field(description="dead prototypes among all K")
    has_ground_truth: bool = Field(description="purity and majority classes are available")


class LabelUpdate(BaseModel):
    """A concept's new name (surrounding whitespace removed). Remove a name with ``DELETE .../label``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = Field(min_length=1, max_length=80, description="the concept's name: 1-80 visible characters")

    @field_validator("label")
    @classmethod
    def _visible(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a label needs a visible character; remove a label with DELETE /api/prototypes/{k}/label")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
            raise ValueError("a label cannot contain control or format characters")
        return value


class MapPoint(BaseModel):
    id: int
    x: float
    y: float
    dead: bool
    label: str | None = None


class PrototypeSimilarity(BaseModel):
    """The K×K cosines between the prototype vectors (3 decimals), for indexes of at most 256 prototypes."""

    num_prototypes: int
    cosine: list[list[float]] = Field(description="cosine[i][j] between prototypes i and j")


class PrototypeMap(BaseModel):
    method: str = Field(description="the projection, e.g. 'pca' of the L2-normalised prototype vectors")
    points: list[MapPoint]


# ---------------------------------------------------------------- segments and images
class Segment(BaseModel):
    id: int
    image_id: int
    prototype: int
    score: float = Field(
        description=(
            "the release's concept score (viz_slots.py): the mean over the segment's feature pixels of their "
            "cosine to the prototype, i.e. ŝ_k · mean(ẑ) with the mean of the normalised projections not "
            "re-normalised, so a segment whose pixels disagree scores lower; a prototype's segments are ranked "
            "by it (images where the prototype is the argmax at no pixel are not ranked)"
        )
    )
    area: int = Field(description="mask pixels at image resolution")
    bbox: list[int] = Field(description="[x, y, w, h] in image pixels")
    rle: Rle = Field(description="mask at image resolution (size = [image height, image width])")
    rank: int | None = Field(None, description="rank within its prototype (0 = best)")


class SegmentPage(BaseModel):
    items: list[Segment]
    prototype: int
    offset: int
    limit: int
    total: int = Field(description="segments of the prototype in the index")


class Neighbor(BaseModel):
    segment: Segment
    similarity: float = Field(description="cosine similarity of the pooled segment vectors")


class NeighborList(BaseModel):
    items: list[Neighbor]
    segment_id: int
    space: Space = Field("projector", description="the embedding the similarities were computed in")


class ImageInfo(BaseModel):
    id: int
    file_name: str
    width: int
    height: int
    box: list[int] | None = Field(
        None,
        description=(
            "[x, y, w, h]: the region the model saw when indexing (the release's centre crop), in image pixels; "
            "its segments partition it"
        ),
    )


class ImagePage(BaseModel):
    items: list[ImageInfo]
    offset: int
    limit: int
    total: int


# ---------------------------------------------------------------- uploads
class Slot(BaseModel):
    prototype: int
    label: str | None = None
    area_share: float = Field(description="share of the pixels the model saw (the whole image, or the crop)")
    area: int = Field(description="mask pixels")
    score: float = Field(
        description=(
            "the release's concept score, as for an indexed segment: the mean of the slot's feature pixels' "
            "cosines to the prototype (ŝ_k · mean(ẑ), the mean not re-normalised)"
        )
    )
    bbox: list[int] = Field(description="[x, y, w, h] in the pixels of the analysed image")
    bbox_size: list[int] = Field(description="[width, height] of the analysed image (bbox/rle frame)")
    rle: Rle
    color: list[int] = Field(description="[r, g, b], as in the overlay")
    neighbors: list[Neighbor] = Field(description="the nearest dataset segments (empty without an index)")


class SlotsResult(BaseModel):
    """The slots of an uploaded image. Images are inline base64 PNGs."""

    width: int = Field(description="analysed image width (uploads are downscaled to a bounded size)")
    height: int
    box: list[int] = Field(
        description=(
            "[x, y, w, h]: the region the model saw, in analysed pixels: the whole image by default, the index's "
            "centre crop with ?crop=true"
        )
    )
    cropped: bool = Field(False, description="true when the model saw only the centre crop (?crop=true)")
    assignment_png: Base64Png = Field(
        description="the box's assignment map: a palette PNG whose pixel values are prototype ids"
    )
    overlay_png: Base64Png = Field(
        description=("the analysed image with every slot in its colour (with ?crop=true the crop is outlined)")
    )
    slots: list[Slot]
    space: Space = Field(
        "projector", description="the embedding the slots' nearest dataset segments were searched in (?space=)"
    )
    elapsed_ms: float


# ---------------------------------------------------------------- stats and evaluation
class InlineExample(BaseModel):
    """One example of an evaluation, inline: the predicted (Hungarian-matched) and true class maps."""

    image_id: int
    prediction: Base64Png = Field(description="palette PNG of the matched prediction (pixel = class id)")
    ground_truth: Base64Png = Field(description="palette PNG of the ground truth (pixel = class id, 255 unlabelled)")


Stats = mirror(
    indexer_types.Stats,
    doc=(
        "The slot statistics of the index (docs/method.md §7), field for field as `indexer.stats` computes them; "
        "`near_duplicates` are the pairs above `duplicate_threshold` (the `?duplicate_threshold=` of the "
        "request, else the stored default). The K×K cosines are served apart: "
        "/api/prototypes/similarity (numbers, K <= 256) and /api/prototypes/similarity.png (any K)."
    ),
)

EvalResult = mirror(
    indexer_types.EvalResult,
    doc=(
        "One stored evaluation, field for field as `indexer.evaluate.run_eval` returns it (scores are "
        "fractions), with its id, when it was stored and the first examples inline."
    ),
    extra={
        "id": (int, Field(description="the stored evaluation's id")),
        "created_at": (str, Field(description="when it was stored (ISO 8601, UTC)")),
        "examples": (
            list[InlineExample],
            Field(
                default_factory=list,
                description=("the first stored examples (all of them via /api/eval/{id}/examples)"),
            ),
        ),
    },
)


class EvalList(BaseModel):
    items: list[EvalResult]
    paper: mirror(indexer_types.ReferenceScore) = Field(  # type: ignore[valid-type]
        description="the paper's row with its own tag: a comparison only beside a score whose `paper.comparable` "
        "is true, a reference line elsewhere (`paper.differences` names what differs)"
    )


Dissection = mirror(
    indexer_types.DissectionResult,
    name="Dissection",
    doc="The newest stored dissection of the model's prototypes (`indexer.evaluate_objects.dissect`): per prototype "
    "its IoU with every class and its best class; the classes found above the threshold; its evaluation's id.",
    extra={"eval_id": (int, Field(description="the stored evaluation it belongs to"))},
)


class EvalExample(BaseModel):
    image_id: int
    file_name: str | None = None
    pred_url: str
    gt_url: str


class EvalExampleList(BaseModel):
    eval_id: int
    items: list[EvalExample]


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    protocol: Protocol = "synthetic"
    baseline: Baseline = "none"
    resolution: int = Field(recipes.EVAL_RESOLUTION, ge=32, le=1024)
    split: EvalSplit = "val2017"
    seeds: int = Field(
        EVAL_SEEDS, ge=1, le=20, description="runs of the k-means baseline and the cluster probe (mean ± std)"
    )
    all_images: bool = Field(False, description="every image of the split instead of the protocol's curated list")
    metrics: list[EvalMetric] = Field(
        ["segmentation"],
        min_length=1,
        max_length=len(EVAL_METRICS),
        description="what to score (the semantic scores always): segmentation, object-discovery (FG-ARI, mBO "
        "against the instance masks), dissection (every prototype's IoU with every class)",
    )
    dissection_threshold: float = Field(
        DISSECTION_THRESHOLD, ge=0.0, lt=1.0, description="a class is found above this IoU with a prototype"
    )


# ---------------------------------------------------------------- jobs
CheckpointId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}\.pth$")]


def _bounds(rule: train_fields.Rule | None) -> dict[str, float]:
    """The pydantic bounds (``ge``/``gt``, ``le``/``lt``) of a range rule."""
    if rule is None or rule.choices:
        return {}
    bounds: dict[str, float] = {}
    if rule.lo is not None:
        bounds["gt" if rule.lo_open else "ge"] = rule.lo
    if rule.hi is not None:
        bounds["lt" if rule.hi_open else "le"] = rule.hi
    return bounds


def _override(spec: train_fields.TrainField) -> tuple[Any, Any]:
    """``(annotation, Field)`` of one client field: optional (None keeps the preset's value), the API's range."""
    rule = spec.api_rule
    kind: Any = Literal[rule.choices] if rule is not None and rule.choices else spec.kind
    return kind | None, Field(None, description=spec.description or None, **_bounds(rule))


class _StrictOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


#: The config fields a client may override, built from :data:`core.train_fields.TRAIN_FIELDS` (the table the
#: trainer's rules come from): the same names, types and descriptions, the API's bounds.
TrainOverrides = create_model(
    "TrainOverrides",
    __base__=_StrictOverrides,
    __doc__="""Config fields a client may override (numbers, booleans, enums); paths are server-side only.

    Every number is bounded (the largest values cover the release's recipes several times over) and
    finite; integers and booleans are strict (``1.0`` is not an int, ``1`` is not ``true``).
    """,
    __module__=__name__,
    **{name: _override(spec) for name, spec in train_fields.client_fields().items()},
)


class TrainRequest(BaseModel):
    """A training job. ``nproc_per_node`` is also checked against the devices (or cores) visible."""

    model_config = ConfigDict(extra="forbid", strict=True)
    preset: PresetName = recipes.DEFAULT_PRESET
    overrides: TrainOverrides = Field(default_factory=TrainOverrides)
    name: Name | None = Field(None, description="run name; output goes to <runs_dir>/<name>")
    resume: bool = Field(False, description="continue the existing run <name> from its last checkpoint")
    nproc_per_node: int = Field(
        1, ge=1, le=64, description=">1 launches torchrun --standalone; at most the visible GPUs (CPU: cores)"
    )


class IndexRequest(BaseModel):
    """Which checkpoint to index: ``checkpoint`` (an id from GET /api/checkpoints) or ``run`` (its newest)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    checkpoint: CheckpointId | None = Field(None, description="'<run>/<file>.pth' as listed by /api/checkpoints")
    run: Name | None = Field(None, description="a run under the runs directory; its newest checkpoint")
    name: Name | None = Field(None, description="index name; output goes to <indexes_dir>/<name>")
    split: EvalSplit = "val2017"
    resize: int = Field(recipes.INDEX_RESIZE, ge=32, le=2048)
    crop: int = Field(recipes.INDEX_CROP, ge=32, le=2048)
    batch_size: int | None = Field(None, ge=1, le=4096)
    make_default: bool = Field(False, description="make the new index the default when the job succeeds")
    activate: bool = Field(False, description="the earlier name of 'make_default'")

    @model_validator(mode="after")
    def _one_source(self) -> IndexRequest:
        if (self.checkpoint is None) == (self.run is None):
            raise ValueError("give exactly one of 'checkpoint' ('<run>/<file>.pth') or 'run'")
        return self


class Job(BaseModel):
    id: int
    kind: Literal["train", "index", "eval"]
    name: str
    status: Literal["running", "stopping", "succeeded", "failed", "stopped"]
    progress: float | None = Field(None, description="fraction done, 0..1")
    eta_s: float | None = None
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    latest_metrics: Record | None = Field(None, description="the run's last metrics.jsonl record")
    config: Record = Field(description="what the job was started with")
    pid: int | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    message: str | None = None


class JobList(BaseModel):
    items: list[Job]


class MetricsPage(BaseModel):
    job_id: int
    items: list[Record] = Field(description="metrics.jsonl records with step > since, oldest first")
    last_step: int | None = Field(None, description="pass as ?since= to get only newer records")
    event: Record | None = Field(None, description="the run's final event, once written")


class JobLog(BaseModel):
    job_id: int
    log: str = Field(description="the last bytes of the job's log")
    size: int
    truncated: bool


class CheckpointEntry(BaseModel):
    id: str = Field(description="'<run>/<file>': pass it as 'checkpoint' to POST /api/jobs/index")
    name: str = Field(description="same as id")
    run: str
    file: str
    epoch: int | None = None
    step: int | None = None
    size_bytes: int
    modified: float
    config: Record | None = Field(None, description="model config")
    train_config: Record | None = Field(None, description="the training config saved in the checkpoint")
    active: bool = Field(False, description="the active index was built from it")
    indexed: bool = Field(False, description="some index under the indexes directory was built from it")


class CheckpointList(BaseModel):
    items: list[CheckpointEntry]


class ActivateRequest(BaseModel):
    """Exactly one of ``job_id`` (a succeeded index job) or ``name`` (under the indexes directory)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    job_id: int | None = Field(None, ge=0, le=MAX_ID, description="a succeeded index job")
    name: Name | None = Field(None, description="an index under the configured indexes directory")

    @model_validator(mode="after")
    def _one_source(self) -> ActivateRequest:
        if (self.job_id is None) == (self.name is None):
            raise ValueError("give exactly one of 'job_id' or 'name'")
        return self


# ---------------------------------------------------------------- indexes and their comparison
class IndexEntry(BaseModel):
    """An index under the configured indexes directory."""

    name: Name
    build: str = Field("", description="the build id (what ?build= checks)")
    checkpoint: str = Field(description="the checkpoint's file name")
    run: str | None = Field(None, description="the run folder the checkpoint was in")
    epoch: int | None = Field(None, description="the checkpoint's epoch, when it can be read")
    step: int | None = Field(None, description="the checkpoint's optimiser step, when it can be read")
    num_prototypes: int
    num_images: int
    built_at: str
    default: bool = Field(False, description="the index the routes answer from without ?index=")
    active: bool = Field(description="the same as 'default' (its earlier name)")


class IndexList(BaseModel):
    items: list[IndexEntry]
    default: str | None = Field(None, description="the default index's name (null: none is loaded)")


class DefaultIndexRequest(BaseModel):
    """The index to make the default (under the indexes directory)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name


class CarryNamesRequest(BaseModel):
    """Which index's concept names to carry over through Compare's matching, and how close a pair must be."""

    model_config = ConfigDict(extra="forbid", strict=True)
    source: Name = Field(description="the index whose names are carried over (of the same images)")
    min_iou: float = Field(0.5, ge=0.0, le=1.0, description="the least mask IoU of a matched pair that takes a name")
    overwrite: bool = Field(False, description="replace names the target already has")


class CarriedName(BaseModel):
    source_prototype: int
    prototype: int = Field(description="the target index's prototype that took the name")
    label: str
    iou: float


class CarriedNames(BaseModel):
    items: list[CarriedName]
    skipped: int = Field(description="named pairs left out: below min_iou, or the target already named")


class RenameIndexRequest(BaseModel):
    """An index's new name."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name


class CompareSummary(BaseModel):
    """Counts of a comparison (one row of a concept timeline)."""

    active_a: int
    active_b: int
    matched: int
    mean_iou: float | None
    weighted_iou: float | None = Field(description="mean IoU of the pairs weighted by their pixels")
    splits: int
    merges: int
    born: int
    died: int
    same_id_matches: int


class CompareResult(StrictModel):
    """Two indexes of the same images (A, B) compared: prototypes matched by the Hungarian algorithm on
    their pixel co-assignment, the pairs' mask IoU, and the unmatched ones classified (`indexer.compare`)."""

    index_a: Name
    index_b: Name
    num_images: int = Field(description="images both indexes hold")
    num_pixels: int = Field(description="pixels compared")
    num_prototypes_a: int
    num_prototypes_b: int
    active_a: list[int]
    active_b: list[int]
    pairs: list[mirror(indexer_compare.MatchedPair)]  # type: ignore[valid-type]
    splits: list[mirror(indexer_compare.Relation)]  # type: ignore[valid-type]
    merges: list[mirror(indexer_compare.Relation)]  # type: ignore[valid-type]
    born: list[int] = Field(description="prototypes of B that cover no prototype of A")
    died: list[int] = Field(description="prototypes of A that no prototype of B covers")
    same_id_matches: int
    params: dict[str, float]
    seconds: float
    summary: CompareSummary


# ---------------------------------------------------------------- options (core.recipes)
class PresetOption(BaseModel):
    """A training preset and the main options the training form starts from."""

    name: PresetName
    epochs: int
    batch_size: int
    lr: float
    num_prototypes: int
    precision: Precision
    budget_minutes: float = Field(description="0 = no time budget")
    warmup_epochs: float = Field(
        description="epochs of linear lr warm-up: a schedule of no more epochs ends inside it, at its peak lr"
    )


class FieldRange(BaseModel):
    """The numbers the API accepts for a training field: from ``minimum`` to ``maximum``, each bound
    excluded where its ``exclusive_*`` says so."""

    minimum: float
    maximum: float
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False


class Options(BaseModel):
    """What a client may choose, from :mod:`core.recipes`: the UI's forms derive from this."""

    presets: list[PresetOption]
    default_preset: PresetName
    precisions: list[Precision]
    protocols: list[Protocol]
    baselines: list[Baseline] = Field(description="'none' is the checkpoint itself")
    eval_resolution: int = Field(description="default shorter side and centre crop of an evaluation")
    eval_splits: list[EvalSplit]
    index_resize: int = Field(description="default shorter side before the index's centre crop")
    index_crop: int
    near_duplicate_threshold: float = Field(description="default cosine from which prototypes are near-duplicates")
    train_ranges: dict[str, FieldRange] = Field(
        description="the accepted range of each number of the training form (core.train_fields), so that a form "
        "offers only what POST /api/jobs/train takes"
    )
