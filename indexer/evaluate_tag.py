"""Every score with how it was measured, and the paper's row beside only the scores measured its way.

A :class:`indexer.types.ScoreTag` holds the choices that change an unsupervised-segmentation score: the
benchmark, its image list (name, images used / listed), K, the matching (one-to-one Hungarian, many-to-one,
or the 27-cluster probe), the resolution and crop, CRF or not, and the number of seeds averaged. The paper's
row (:data:`PAPER`, SlotCon Table 5: a K = 27 model matched one-to-one on the 2,175 curated images at
320 × 320, no CRF, one run) carries its own tag; :func:`check_against` says whether a score may be drawn
beside it (every field equal) or only as a reference line, naming each field that differs.

Pure Python (no torch), so results stored by older versions get their tags when read (:func:`with_tags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from indexer.evaluate_images import CURATED_NAME, CURATED_SIZE
from indexer.types import ImageList, ReferenceCheck, ReferenceScore, ScoreTag, TagDifference

MATCHINGS = ("one-to-one", "many-to-one", "cluster-probe", "slots-to-instances", "prototype-to-class")
MATCHING_WORDS = {
    "one-to-one": "one-to-one Hungarian",
    "many-to-one": "many-to-one (majority class per cluster)",
    "cluster-probe": "cluster probe (k-means with one centre per class on the teacher's features, then Hungarian)",
    "slots-to-instances": "slot masks against instance masks, no matching (FG-ARI, best overlap per instance)",
    "prototype-to-class": "every prototype against every class (IoU, no matching)",
}
#: Seeds of the k-means baseline and the cluster probe by default (mean and standard deviation reported).
EVAL_SEEDS = 5
#: The crop every evaluation takes: shorter side resized to the resolution, then the centre square.
CENTRE = "centre"


def tag_label(tag: ScoreTag) -> str:
    """The tag in words: ``cocostuff27 · cocostuff27-curated-val2017 2,175/2,175 · K=27 · one-to-one ·
    320 centre crop · no CRF · 1 seed``."""
    images = tag.image_list
    return " · ".join(
        [
            tag.benchmark,
            f"{images.name} {images.used:,}/{images.listed:,}",
            f"K={tag.k}",
            tag.matching,
            f"{tag.resolution} {tag.crop} crop",
            "CRF" if tag.crf else "no CRF",
            f"{tag.seeds} seed" + ("s" if tag.seeds != 1 else ""),
        ]
    )


def make_tag(
    benchmark: str,
    image_list: ImageList,
    *,
    k: int,
    matching: str,
    resolution: int,
    crf: bool = False,
    seeds: int = 1,
    crop: str = CENTRE,
) -> ScoreTag:
    """The :class:`ScoreTag` of a score, with its ``label`` (ValueError for an unknown matching)."""
    if matching not in MATCHINGS:
        raise ValueError(f"unknown matching {matching!r}; choose one of: {', '.join(MATCHINGS)}")
    tag = ScoreTag(benchmark, image_list, int(k), matching, int(resolution), crop, bool(crf), int(seeds))
    return replace(tag, label=tag_label(tag))


#: SlotCon's COCO-Stuff-27 row (NeurIPS 2022, Table 5; setting in Section 4.2 and Appendix A.3).
PAPER = ReferenceScore(
    name="SlotCon (paper)",
    source="Wen et al., NeurIPS 2022, Table 5",
    miou=0.1826,
    pixel_accuracy=0.4236,
    tag=make_tag(
        "cocostuff27",
        ImageList(CURATED_NAME, CURATED_SIZE, CURATED_SIZE),
        k=27,
        matching="one-to-one",
        resolution=320,
    ),
)


def check_against(tag: ScoreTag, reference: ReferenceScore = PAPER) -> ReferenceCheck:
    """Whether ``reference`` may be drawn as a comparison beside a score tagged ``tag``: only when every
    field agrees; otherwise ``differences`` names each field that does not (ours, then the reference's)."""
    ref = reference.tag
    ours_images, ref_images = tag.image_list, ref.image_list
    pairs = [
        ("benchmark", tag.benchmark, ref.benchmark),
        ("image list", ours_images.name, ref_images.name),
        ("images used", f"{ours_images.used:,}/{ours_images.listed:,}", f"{ref_images.used:,}/{ref_images.listed:,}"),
        ("K", str(tag.k), str(ref.k)),
        ("matching", tag.matching, ref.matching),
        ("resolution", str(tag.resolution), str(ref.resolution)),
        ("crop", tag.crop, ref.crop),
        ("CRF", "yes" if tag.crf else "no", "yes" if ref.crf else "no"),
        ("seeds", str(tag.seeds), str(ref.seeds)),
    ]
    differences = [TagDifference(name, ours, theirs) for name, ours, theirs in pairs if ours != theirs]
    return ReferenceCheck(reference.name, not differences, differences)


def differences_text(check: ReferenceCheck) -> str:
    """``K 256 (paper 27); matching many-to-one (paper one-to-one)``, or ``same protocol``."""
    if check.comparable:
        return "same protocol"
    return "; ".join(f"{d.field} {d.ours} (paper {d.reference})" for d in check.differences)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n - 1) of the defined values; std is None for fewer than two,
    both None for none."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


# ---------------------------------------------------------------- results stored before tags
def _legacy_image_list(data: dict[str, Any]) -> dict[str, Any]:
    protocol, counts = data.get("protocol") or {}, data.get("counts") or {}
    used = int(counts.get("evaluated_images") or counts.get("num_images") or 0)
    skipped = int(counts.get("skipped_images") or 0)
    if protocol.get("curated_list"):
        return {"name": Path(protocol["curated_list"]).name, "used": used, "listed": used + skipped}
    return {"name": f"all-{protocol.get('split') or 'folder'}", "used": used, "listed": used + skipped}


def _legacy_scores(data: dict[str, Any]) -> list[dict[str, Any]]:
    protocol = data.get("protocol") or {}
    images = ImageList(**data.get("image_list") or _legacy_image_list(data))
    method = {"none": "SlotCon"}.get(data.get("baseline", "none"), data.get("baseline", "none"))
    common = dict(
        k=int(protocol.get("num_clusters") or (data.get("counts") or {}).get("num_clusters") or 0),
        resolution=int(protocol.get("resolution") or 0),
        crf=bool(protocol.get("crf", False)),
    )
    many = data.get("many_to_one") or {}
    rows = []
    for matching, miou, acc in (
        ("one-to-one", data.get("miou"), data.get("pixel_accuracy")),
        ("many-to-one", many.get("miou"), many.get("pixel_accuracy")),
    ):
        tag = make_tag(protocol.get("name", "?"), images, matching=matching, **common)
        rows.append({"method": method, "matching": matching, "miou": miou, "pixel_accuracy": acc,
                     "tag": tag.to_dict(), "paper": check_against(tag).to_dict()})  # fmt: skip
    return rows


def with_tags(data: dict[str, Any]) -> dict[str, Any]:
    """A result's JSON with a tag on every score: a result stored before scores were tagged gets the tags
    its protocol implies (one run, the list it names or all images); every score's ``paper`` check is
    recomputed from its tag and :data:`PAPER`."""
    data = dict(data)
    if not data.get("scores"):
        data["scores"] = _legacy_scores(data)
    if not data.get("tag"):
        data["tag"] = data["scores"][0]["tag"]
    if data.get("image_list") is None:
        data["image_list"] = data["tag"]["image_list"]
    many = data.get("many_to_one")
    if isinstance(many, dict) and not many.get("tag"):
        found = [s["tag"] for s in data["scores"] if s["matching"] == "many-to-one"]
        data["many_to_one"] = {**many, "tag": found[0] if found else None}
    scores = []
    for score in data["scores"]:
        tag = ScoreTag.from_dict(score["tag"])
        scores.append({**score, "paper": check_against(tag).to_dict()})
    data["scores"] = scores
    return data
