"""Export an index's segments and statistics for other tools.

- ``coco``: one COCO-style JSON file. ``images`` (file names relative to the data root, which ``info``
  names, plus each image's ``crop_box``), ``categories`` = the K prototypes (``id`` = prototype id,
  ``name`` = the user's label or ``prototype_<k>``, made unique; dead ones included so ids cover 0..K-1),
  ``annotations`` = the segments (``id`` = segment id, ``category_id`` = prototype, ``segmentation`` =
  the index's own compressed RLE at the image's stored resolution, ``area``, ``bbox`` [x, y, w, h],
  ``score``, ``rank``, ``iscrowd`` 0). Loads with ``pycocotools.coco.COCO`` (``annToMask`` gives the
  index's masks bit for bit), pandas ``json_normalize`` and FiftyOne's COCO importer (with the data root
  as its data path).
- ``csv`` / ``parquet``: a directory with ``segments``, ``prototypes`` and ``images`` tables (the
  segments carry their RLE counts, so a table alone rebuilds the masks) and ``stats.json`` (the slot
  statistics); with a stored dissection (``slotcon eval --metric dissection``) the prototypes carry its best
  class and IoU and a ``dissection`` table holds every prototype's IoU with every class. Parquet needs
  ``pyarrow`` (or pandas with a Parquet engine); it is not a dependency, so without it the export stops with
  a message naming the package.

Rows are read a page at a time and written as they come, so memory stays flat on large indexes.

CLI: ``python -m indexer.export --index I --format coco|csv|parquet --out PATH`` (``slotcon export-index``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from indexer import schema
from indexer.evaluate_objects import latest_dissection
from indexer.store import ConceptIndex, PrototypeRecord

FORMATS = ("coco", "csv", "parquet")
PAGE = 5000
SEGMENT_COLUMNS = (
    "id",
    "image_id",
    "file_name",
    "prototype",
    "label",
    "rank",
    "score",
    "area",
    "feature_area",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "height",
    "width",
    "rle_counts",
)
PROTOTYPE_COLUMNS = (
    "id",
    "name",
    "label",
    "num_images",
    "num_segments",
    "pixel_share",
    "mean_score",
    "dead",
    "majority_class_name",
    "majority_class_id",
    "purity",
    "best_segment_id",
    "dissection_best_class",
    "dissection_best_iou",
)
#: The newest dissection, long: one row per (prototype, class).
DISSECTION_COLUMNS = ("eval_id", "prototype", "class_id", "class_name", "iou")
IMAGE_COLUMNS = ("id", "file_name", "width", "height", "crop_x", "crop_y", "crop_w", "crop_h", "num_segments")


class MissingPackageError(RuntimeError):
    """An optional package that a format needs is not installed; the message names it."""


def category_names(protos: Sequence[PrototypeRecord]) -> dict[int, str]:
    """{prototype id: a unique name}: its label, or ``prototype_<k>``; a label two prototypes share
    becomes ``<label> #<k>`` for each (tools key categories by name as often as by id)."""
    labels = [p.label for p in protos if p.label]
    return {
        p.id: (p.label if labels.count(p.label) == 1 else f"{p.label} #{p.id}") if p.label else f"prototype_{p.id}"
        for p in protos
    }


def image_rows(index: ConceptIndex) -> Iterator[dict[str, Any]]:
    """One dict per indexed image, in id order (columns :data:`IMAGE_COLUMNS`)."""
    offset = 0
    while page := index.images(offset, PAGE):
        for r in page:
            x, y, w, h = r.crop_box
            yield {
                "id": r.id,
                "file_name": r.file_name,
                "width": r.width,
                "height": r.height,
                "crop_x": x,
                "crop_y": y,
                "crop_w": w,
                "crop_h": h,
                "num_segments": r.num_segments,
            }
        offset += len(page)


def dissection_rows(index: ConceptIndex) -> list[dict[str, Any]]:
    """The newest stored dissection, one dict per (prototype, class) (columns :data:`DISSECTION_COLUMNS`);
    empty without one."""
    latest = latest_dissection(index.eval_results())
    if latest is None:
        return []
    eval_id, found = latest
    return [
        {"eval_id": eval_id, "prototype": r.prototype, "class_id": c, "class_name": name, "iou": iou}
        for r in found.prototypes
        for c, (name, iou) in enumerate(zip(found.class_names, r.iou, strict=True))
    ]


def prototype_rows(index: ConceptIndex) -> list[dict[str, Any]]:
    """One dict per prototype, dead ones included (columns :data:`PROTOTYPE_COLUMNS`; the dissection's
    columns empty without a stored dissection)."""
    protos = index.prototypes()
    names = category_names(protos)
    latest = latest_dissection(index.eval_results())
    dissected = {r.prototype: r for r in latest[1].prototypes} if latest else {}
    return [
        {
            "id": p.id,
            "name": names[p.id],
            "label": p.label,
            "num_images": p.num_images,
            "num_segments": p.num_segments,
            "pixel_share": p.pixel_share,
            "mean_score": p.mean_score,
            "dead": p.dead,
            "majority_class_name": p.majority_class_name,
            "majority_class_id": p.majority_class_id,
            "purity": p.purity,
            "best_segment_id": p.best_segment_id,
            "dissection_best_class": dissected[p.id].best_class_name if p.id in dissected else None,
            "dissection_best_iou": dissected[p.id].best_iou if p.id in dissected else None,
        }
        for p in protos
    ]


def segment_rows(index: ConceptIndex) -> Iterator[dict[str, Any]]:
    """One dict per segment, by prototype and rank (columns :data:`SEGMENT_COLUMNS`)."""
    files = {r["id"]: r["file_name"] for r in image_rows(index)}
    labels = {p.id: p.label for p in index.prototypes()}
    for k in range(index.num_prototypes):
        offset = 0
        while page := index.top_segments(k, offset, PAGE):
            for s in page:
                h, w = s.rle["size"]
                yield {
                    "id": s.id,
                    "image_id": s.image_id,
                    "file_name": files[s.image_id],
                    "prototype": s.prototype,
                    "label": labels[s.prototype],
                    "rank": s.rank,
                    "score": s.score,
                    "area": s.area,
                    "feature_area": s.feature_area,
                    "bbox_x": s.bbox[0],
                    "bbox_y": s.bbox[1],
                    "bbox_w": s.bbox[2],
                    "bbox_h": s.bbox[3],
                    "height": h,
                    "width": w,
                    "rle_counts": s.rle["counts"],
                }
            offset += len(page)


def _annotation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "image_id": row["image_id"],
        "category_id": row["prototype"],
        "segmentation": {"size": [row["height"], row["width"]], "counts": row["rle_counts"]},
        "area": row["area"],
        "bbox": [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]],
        "iscrowd": 0,
        "score": row["score"],
        "rank": row["rank"],
        "feature_area": row["feature_area"],
    }


def _image(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "file_name": row["file_name"],
        "width": row["width"],
        "height": row["height"],
        "crop_box": [row["crop_x"], row["crop_y"], row["crop_w"], row["crop_h"]],
    }


def _category(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "supercategory": "prototype",
        **{c: row[c] for c in PROTOTYPE_COLUMNS if c not in ("id", "name")},
    }


def _write_array(f, key: str, items: Iterator[dict[str, Any]], last: bool = False) -> int:
    f.write(f' "{key}": [')
    n = 0
    for item in items:
        f.write(("," if n else "") + "\n  " + json.dumps(item, separators=(",", ":")))
        n += 1
    f.write("\n ]" + ("\n" if last else ",\n"))
    return n


def write_coco(index: ConceptIndex, out: Path) -> dict[str, int]:
    """Write the COCO-style JSON (see the module doc) to ``out``, atomically; returns the counts."""
    info = {
        "description": f"SlotCon concept index {index.index_dir}",
        "index_version": schema.INDEX_VERSION,
        "checkpoint_sha256": index.checkpoint_sha256,
        "data_root": str(index.data_root),
        "split": index.split,
        "num_prototypes": index.num_prototypes,
        "class_names": index.class_names,
    }
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w") as f:
        f.write('{\n "info": ' + json.dumps(info) + ',\n "licenses": [],\n')
        counts = {
            "images": _write_array(f, "images", map(_image, image_rows(index))),
            "categories": _write_array(f, "categories", map(_category, prototype_rows(index))),
            "annotations": _write_array(f, "annotations", map(_annotation, segment_rows(index)), last=True),
        }
        f.write("}\n")
    os.replace(tmp, out)
    return counts


def _write_csv(path: Path, columns: Sequence[str], rows) -> int:
    n = 0
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


#: Column types of the Parquet tables (every other column is int64), fixed so that a column that is empty
#: on the first rows (labels) has the same type in every batch.
_ARROW_TYPES = (
    {c: "string" for c in ("file_name", "label", "rle_counts", "name", "majority_class_name")}
    | {c: "string" for c in ("dissection_best_class", "class_name")}
    | {c: "float64" for c in ("score", "pixel_share", "mean_score", "purity", "dissection_best_iou", "iou")}
    | {"dead": "bool"}
)


def _batches(rows, size: int = PAGE) -> Iterator[list[dict[str, Any]]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _parquet_writer():
    """A function ``(path, columns, rows) -> count`` writing Parquet with pyarrow, else pandas; raises
    :class:`MissingPackageError` naming pyarrow when neither can."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pa = None
    if pa is not None:

        def write(path: Path, columns: Sequence[str], rows) -> int:
            schema = pa.schema([(c, _ARROW_TYPES.get(c, "int64")) for c in columns])
            n = 0
            with pq.ParquetWriter(path, schema) as writer:
                for batch in _batches(rows):
                    writer.write_table(pa.Table.from_pydict({c: [r[c] for r in batch] for c in columns}, schema))
                    n += len(batch)
            return n

        return write
    try:
        import pandas as pd
    except ImportError:
        raise MissingPackageError(
            "--format parquet needs the 'pyarrow' package (pip install pyarrow), or use --format csv"
        ) from None

    def write_pandas(path: Path, columns: Sequence[str], rows) -> int:
        frame = pd.DataFrame(list(rows), columns=list(columns))
        try:
            frame.to_parquet(path)
        except ImportError as e:
            raise MissingPackageError(f"--format parquet needs 'pyarrow' (pip install pyarrow): {e}") from None
        return len(frame)

    return write_pandas


def write_tables(index: ConceptIndex, out: Path, fmt: str) -> dict[str, int]:
    """Write ``segments``, ``prototypes`` and ``images`` tables (``csv`` or ``parquet``), the ``dissection``
    table when the index stores one, and ``stats.json`` into the directory ``out``; returns the row counts."""
    write = _write_csv if fmt == "csv" else _parquet_writer()
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "segments": write(out / f"segments.{fmt}", SEGMENT_COLUMNS, segment_rows(index)),
        "prototypes": write(out / f"prototypes.{fmt}", PROTOTYPE_COLUMNS, prototype_rows(index)),
        "images": write(out / f"images.{fmt}", IMAGE_COLUMNS, image_rows(index)),
    }
    dissection = dissection_rows(index)
    if dissection:
        counts["dissection"] = write(out / f"dissection.{fmt}", DISSECTION_COLUMNS, dissection)
    (out / "stats.json").write_text(json.dumps(index.stats().to_dict(), indent=1) + "\n")
    return counts


def export_index(index: ConceptIndex | str | os.PathLike, fmt: str, out: str | os.PathLike) -> dict[str, int]:
    """Export ``index`` (open, or its directory) as ``fmt`` (one of :data:`FORMATS`) to ``out`` (a file for
    ``coco``, a directory for the tables); returns the counts written."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if not isinstance(index, ConceptIndex):
        with ConceptIndex.open(index) as opened:
            return export_index(opened, fmt, out)
    if fmt == "coco":
        if out.is_dir():
            raise ValueError(f"{out} is a directory; --format coco writes one JSON file")
        out.parent.mkdir(parents=True, exist_ok=True)
        return write_coco(index, out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; --format {fmt} writes a directory of tables")
    return write_tables(index, out, fmt)
