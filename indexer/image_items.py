"""The images a job reads, as a dataset: ``(image id, path)`` pairs under a data root."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset


class ListedImages(Dataset):
    """A job's images (``items``: ``(image id, path)`` under ``root``). :meth:`item_of` starts each item with
    the image's id and its file name relative to ``root``; subclasses decode the image and add their fields,
    returning a failure as the item's ``error`` rather than raising it (one unreadable image skips, the job
    goes on)."""

    def __init__(self, items: list[tuple[int, Path]], root: Path) -> None:
        self.items, self.root = items, root

    def __len__(self) -> int:
        return len(self.items)

    def item_of(self, i: int) -> tuple[dict, Path]:
        """The ``i``-th image's item (``id``, ``file_name``) and its path."""
        image_id, path = self.items[i]
        return {"id": image_id, "file_name": path.relative_to(self.root).as_posix()}, path
