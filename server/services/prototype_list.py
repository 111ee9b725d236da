"""The prototype list's filters, order and pages, done on the server so a K = 2048 grid ships one page
(``GET /api/prototypes?sort=&q=&hide_dead=&offset=&limit=``); the UI's grid names the same orders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The orders of ``?sort=``; ties keep id order (the sort is stable over records in id order).
SORTS: dict[str, tuple[Callable[[Any], object], bool]] = {
    "id": (lambda r: r.id, False),
    "most_active": (lambda r: (r.num_images, r.pixel_share), True),
    "least_active": (lambda r: (r.num_images, r.pixel_share), False),
    "purity": (lambda r: -1.0 if r.purity is None else float(r.purity), True),
    "label": (lambda r: (r.label is None, (r.label or "").lower()), False),
    # the best IoU with a labelled class of the newest dissection (select's ``dissection``); none: last
    "dissection": (lambda r: -1.0, True),
}


def matches(rec: Any, query: str) -> bool:
    """``query`` (trimmed, case-blind) is part of the label or the majority class's name, or is the id
    (``12`` or ``#12``)."""
    q = query.strip().lower()
    if not q:
        return True
    return (
        q in (rec.label or "").lower()
        or q in (rec.majority_class_name or "").lower()
        or q in (f"#{rec.id}", str(rec.id))
    )


def select(
    records: Sequence[Any],
    *,
    sort: str = "id",
    query: str = "",
    hide_dead: bool = False,
    dissection: Mapping[int, float] | None = None,
) -> list[Any]:
    """The records (``indexer.store.PrototypeRecord``) the filters keep, in the order ``sort`` names;
    ``dissection``: {prototype: best IoU} for ``sort="dissection"``."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    kept = [r for r in records if not (hide_dead and r.dead) and matches(r, query)]
    key, reverse = SORTS[sort]
    if sort == "dissection":
        ious = dissection or {}
        key = lambda r: ious.get(r.id, -1.0)  # noqa: E731
    if reverse:  # descending, ties still in id order
        return sorted(kept, key=lambda r: (key(r), -r.id), reverse=True)
    return sorted(kept, key=lambda r: (key(r), r.id))
