"""Concept figures: the paper's layout of a concept index, one row per prototype holding its
top-k segments (best first), each cell the region the model saw with the segment tinted red as in
Figure 3, optionally a title column (``#k`` and the prototype's label, or its majority class).

Written as PNG, PDF or SVG by the output's suffix (:mod:`indexer.figure_formats`), byte-identical for
the same index and arguments. A prototype with fewer than ``topk`` segments (or none: a dead prototype)
keeps its row, padded with grey cells, so the grid is always ``len(prototypes)`` × ``topk``.

CLI: ``python -m indexer.figure --index I --prototypes 3,17,42 --topk 10 --out fig.pdf [--alpha 0.5]
[--labels] [--cell-px 96]`` (also ``slotcon figure``). The prototype list is parsed as a person means it
(``3,17,42``, ``3-5,9``), not character by character like the release's ``--idxs`` (``type=list``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from core.datasets import load_rgb
from indexer.figure_formats import SUFFIXES, SvgCell, SvgText, pdf_bytes, png_bytes, svg_bytes
from indexer.overlay import FIGURE3_ALPHA, overlay_mask
from indexer.segments import decode_rle
from indexer.store import ConceptIndex, ImageRecord, PrototypeRecord, SegmentRecord

GAP = 4
BACKGROUND = (255, 255, 255)
EMPTY = (232, 232, 232)
DEFAULT_CELL_PX = 96
DEFAULT_TOPK = 10


def prototype_ranges(spec: str | Sequence[str | int]) -> list[tuple[int, int]]:
    """The inclusive ``(first, last)`` ranges of a prototype list (``"3,17,42"``, ``"3-5,9"``; spaces
    allowed) in the order given, checked but not expanded: a range's size costs nothing here, so a
    caller can bound it (:func:`parse_prototypes`) before any id is materialised. A list (argparse
    ``nargs``) is joined with commas first.

    Raises ValueError for an empty list, a part that is not a non-negative integer or ``a-b`` with
    a <= b, and for an id listed twice (ranges that overlap): a repeated row is almost always a typo,
    and silently dropping it would give a figure with fewer rows than asked.
    """
    text = spec if isinstance(spec, str) else ",".join(str(s) for s in spec)
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError(f"empty entry in prototype list {_short(text)!r} (use e.g. 3,17,42 or 3-5,9)")
        lo, sep, hi = part.partition("-")
        if not _digits(lo) or (sep and not _digits(hi)):
            raise ValueError(f"{_short(part)!r} is not a prototype id or range (use e.g. 3,17,42 or 3-5,9)")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(f"range {part!r} runs backwards (write {b}-{a})")
        ranges.append((a, b))
    reached = -1  # the highest id of the ranges so far, in order of their first ids
    for start, end in sorted(ranges):
        if start <= reached:
            raise ValueError(f"prototype {start} is listed twice in {_short(text)!r}")
        reached = end
    return ranges


def parse_prototypes(
    spec: str | Sequence[str | int], num_prototypes: int | None = None, limit: int | None = None
) -> list[int]:
    """Prototype ids from ``"3,17,42"`` or ``"3-5,9"`` (ranges inclusive), in the order given.

    With ``num_prototypes`` (the index's K) every id must be below it, and with ``limit`` there may be
    at most that many ids; both are checked on the ranges (:func:`prototype_ranges`) before they are
    expanded, so ``0-100000000`` is refused at once. Raises ValueError naming the rule broken.
    """
    ranges = prototype_ranges(spec)
    count = sum(b - a + 1 for a, b in ranges)
    if limit is not None and count > limit:
        raise ValueError(f"{count} prototypes asked for: a figure takes at most {limit}")
    if num_prototypes is not None:
        beyond = [(a, b) for a, b in ranges if b >= num_prototypes]
        if beyond:
            named = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in beyond[:5])
            raise ValueError(
                f"prototype(s) {named} not in this index (K={num_prototypes}: ids 0..{num_prototypes - 1})"
            )
    return [k for a, b in ranges for k in range(a, b + 1)]


def _digits(text: str) -> bool:
    """True for a plain decimal number (ASCII digits only, at most 18 of them: ids fit in 64 bits)."""
    text = text.strip()
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def _short(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters for an error message."""
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Layout:
    """Geometry of a figure: ``rows`` × ``cols`` square cells of ``cell_px``, ``GAP`` px apart and around,
    after a title column of ``label_px`` (0: no titles)."""

    rows: int
    cols: int
    cell_px: int
    label_px: int = 0

    @property
    def left(self) -> int:
        """x of the first cell column."""
        return GAP + (self.label_px + GAP if self.label_px else 0)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the figure in pixels."""
        step = self.cell_px + GAP
        return self.left + self.cols * step, GAP + self.rows * step

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of cell (row, col)."""
        step = self.cell_px + GAP
        return self.left + col * step, GAP + row * step


@dataclass
class FigureRow:
    """One prototype's row: its id, title lines, and its top segments' cells (at most ``topk``)."""

    prototype: int
    title: list[str]
    segments: list[SegmentRecord]
    cells: list[Image.Image]


def _fit(size: tuple[int, int], cell_px: int) -> tuple[int, int]:
    """(w, h) of a region of ``size`` scaled so its longer side is ``cell_px``."""
    w, h = size
    s = cell_px / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def segment_cell(img: Image.Image, rec: ImageRecord, seg: SegmentRecord, cell_px: int, alpha: float) -> Image.Image:
    """A ``cell_px`` square cell: the region of ``img`` the model saw (its crop box) scaled to fit,
    centred on grey, with the segment's mask tinted Figure-3 red at ``alpha``."""
    x, y, w, h = rec.crop_box
    if w <= 0 or h <= 0:
        x, y, w, h = 0, 0, img.width, img.height
    mask = decode_rle(seg.rle)[y : y + h, x : x + w]
    fw, fh = _fit((w, h), cell_px)
    region = img.crop((x, y, x + w, y + h))
    if (fw, fh) != (w, h):
        region = region.resize((fw, fh), Image.Resampling.BILINEAR, reducing_gap=None)
    tinted = overlay_mask(region, mask, alpha=alpha)  # the mask is nearest-resized to the region
    cell = Image.new("RGB", (cell_px, cell_px), EMPTY)
    cell.paste(tinted, ((cell_px - fw) // 2, (cell_px - fh) // 2))
    return cell


def _title(proto: PrototypeRecord) -> list[str]:
    """``#k`` and the user's label, else the majority class (in parentheses), else nothing."""
    name = proto.label or (f"({proto.majority_class_name})" if proto.majority_class_name else "")
    return [f"#{proto.id}"] + ([name] if name else [])


def figure_rows(
    index: ConceptIndex,
    prototypes: Sequence[int],
    topk: int,
    alpha: float,
    cell_px: int,
    check: Callable[[], None] | None = None,
) -> list[FigureRow]:
    """The rows of a figure; ValueError naming the valid ids for an unknown prototype, ImageReadError for
    an image that cannot be read (each image is decoded once). ``check`` is called before each image is
    read and each cell drawn, and may raise to stop the work (a server's deadline or a client gone)."""
    bad = [k for k in prototypes if not 0 <= int(k) < index.num_prototypes]
    if bad:
        raise ValueError(
            f"prototype(s) {', '.join(map(str, bad))} not in this index "
            f"(K={index.num_prototypes}: ids 0..{index.num_prototypes - 1})"
        )
    images: dict[int, tuple[ImageRecord, Image.Image]] = {}
    rows = []
    for k in prototypes:
        segments = index.top_segments(int(k), 0, topk)
        cells = []
        for seg in segments:
            if check is not None:
                check()
            if seg.image_id not in images:
                rec = index.image(seg.image_id)
                images[seg.image_id] = (rec, load_rgb(rec.path, upright=False))
            rec, img = images[seg.image_id]
            cells.append(segment_cell(img, rec, seg, cell_px, alpha))
        rows.append(FigureRow(int(k), _title(index.prototype(int(k))), segments, cells))
    return rows


def _font(cell_px: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, int]:
    size = max(10, cell_px // 7)
    return ImageFont.load_default(size=size), size


def _wrap(text: str, font, width: int) -> list[str]:
    """Words of ``text`` in lines no wider than ``width`` (a word too long for a line is cut)."""
    lines: list[str] = []
    for word in text.split():
        while font.getlength(word) > width and len(word) > 1:
            word = word[:-1]
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _texts(rows: list[FigureRow], layout: Layout, cell_px: int) -> list[SvgText]:
    """The title lines of every row, placed in the title column (none without one)."""
    if not layout.label_px:
        return []
    font, size = _font(cell_px)
    out = []
    max_lines = max(1, cell_px // (size + 2))
    for r, row in enumerate(rows):
        _, y = layout.cell_origin(r, 0)
        lines = [ln for t in row.title for ln in _wrap(t, font, layout.label_px)][:max_lines]
        out += [SvgText(GAP, y + (i + 1) * (size + 2), ln, size) for i, ln in enumerate(lines)]
    return out


def render(rows: list[FigureRow], layout: Layout, texts: list[SvgText]) -> Image.Image:
    """The figure as one RGB image."""
    fig = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(fig)
    for r, row in enumerate(rows):
        for c in range(layout.cols):
            x, y = layout.cell_origin(r, c)
            if c < len(row.cells):
                fig.paste(row.cells[c], (x, y))
            else:
                draw.rectangle([x, y, x + layout.cell_px - 1, y + layout.cell_px - 1], fill=EMPTY)
    if texts:
        font, _ = _font(layout.cell_px)
        for t in texts:
            draw.text((t.x, t.y), t.text, fill=(0, 0, 0), font=font, anchor="ls")
    return fig


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def concept_figure(
    index: ConceptIndex | str | os.PathLike,
    prototypes: Sequence[int] | str,
    topk: int = DEFAULT_TOPK,
    alpha: float = FIGURE3_ALPHA,
    labels: bool = False,
    cell_px: int = DEFAULT_CELL_PX,
    out: str | os.PathLike = "figure.png",
    check: Callable[[], None] | None = None,
) -> tuple[Layout, list[FigureRow]]:
    """Write the figure of ``prototypes`` (ids, or a string for :func:`parse_prototypes`, parsed against
    the index's K) to ``out`` (.png, .pdf or .svg); returns its layout and rows. ``index``: an open index
    or its directory. ``check``: see :func:`figure_rows`.

    Raises ValueError for a bad suffix, topk < 1, cell_px < 8, alpha outside [0, 1] or unknown
    prototypes (nothing is written then).
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"output {out} must end in one of {', '.join(SUFFIXES)}")
    if topk < 1 or cell_px < 8 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need topk >= 1, cell_px >= 8 and 0 <= alpha <= 1 (got {topk}, {cell_px}, {alpha})")

    def rows_of(opened: ConceptIndex) -> list[FigureRow]:
        k = opened.num_prototypes
        ids = parse_prototypes(prototypes, k) if isinstance(prototypes, str) else [int(p) for p in prototypes]
        return figure_rows(opened, ids, topk, alpha, cell_px, check)

    if isinstance(index, ConceptIndex):
        rows = rows_of(index)
    else:
        with ConceptIndex.open(index) as opened:
            rows = rows_of(opened)
    layout = Layout(len(rows), topk, cell_px, max(cell_px, 72) if labels else 0)
    texts = _texts(rows, layout, cell_px)
    if suffix == ".svg":
        cells = [
            SvgCell(*layout.cell_origin(r, c), cell_px, cell_px, row.cells[c] if c < len(row.cells) else None)
            for r, row in enumerate(rows)
            for c in range(topk)
        ]
        data = svg_bytes(layout.size, cells, texts, _hex(BACKGROUND), _hex(EMPTY))
    else:
        fig = render(rows, layout, texts)
        data = png_bytes(fig) if suffix == ".png" else pdf_bytes(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return layout, rows
