"""What a scan found: each image's path, label(s), split and content key, the classes, and the files skipped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass
class ImageItem:
    """One image file: where it is, its class, its split and its content key."""

    path: Path
    label: int  # the class (single-label); -1 for a multi-label item
    split: str
    digest: str
    labels: tuple[int, ...] = ()  # a multi-label item's labels (none: an all-negative example)

    @property
    def label_set(self) -> frozenset[int]:
        """Its labels as a set, whatever the task: a single-label item's class, or a multi-label item's labels."""
        return frozenset(self.labels) if self.label == -1 else frozenset({self.label})


@dataclass
class DatasetIndex:
    """Everything known about a dataset before decoding: files, classes, splits, and files skipped."""

    root: Path
    layout: str
    classes: list[str]
    items: list[ImageItem]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    task: str = "single"  # "multi" when images carry any number of labels (a labels file)
    given_splits: tuple[str, ...] = ()  # the splits the folder holds itself (train/ val/ test/ folders)

    def split(self, name: str) -> list[ImageItem]:
        """The items of one split."""
        return [it for it in self.items if it.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: {split: {class: n}}."""
        out: dict[str, dict[str, int]] = {}
        for s in SPLITS:
            if self.task == "multi":
                c = Counter(j for it in self.items if it.split == s for j in it.labels)
            else:
                c = Counter(it.label for it in self.items if it.split == s)
            if c:
                out[s] = {name: c.get(i, 0) for i, name in enumerate(self.classes)}
        return out

    def drop(self, failures: dict[str, str]) -> None:
        """Remove items whose content failed to decode, recording each path and reason as skipped."""
        kept = []
        for it in self.items:
            reason = failures.get(it.digest)
            if reason is None:
                kept.append(it)
            else:
                self.skipped.append((it.path, reason))
        self.items = kept

    def table(self) -> str:
        """A short text table: images per class per split, then skipped files."""
        counts = self.counts()
        splits = list(counts)
        head = "label" if self.task == "multi" else "class"
        width = max([len(head)] + [len(c) for c in self.classes])
        lines = [f"data: {self.root}  (layout: {self.layout})"]
        lines += [f"  {n}" for n in self.notes]
        lines.append("  " + head.ljust(width) + "".join(f"{s:>8}" for s in splits))
        for name in self.classes:
            lines.append("  " + name.ljust(width) + "".join(f"{counts[s][name]:>8}" for s in splits))
        if self.task == "multi":
            images = {s: sum(1 for it in self.items if it.split == s) for s in splits}
            lines.append("  " + "images".ljust(width) + "".join(f"{images[s]:>8}" for s in splits))
        else:
            lines.append("  " + "total".ljust(width) + "".join(f"{sum(counts[s].values()):>8}" for s in splits))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines += [f"    {p}: {reason}" for p, reason in self.skipped]
        return "\n".join(lines)
