"""A folder of images with a labels file: the index of a multi-label dataset (or a single-label one whose labels file
gives one label per image), its task detected from the rows or forced, its splits carved across labels."""

from __future__ import annotations

from pathlib import Path

from smallvision.data.files import list_images, read_digest
from smallvision.data.index import SPLITS, DatasetIndex, ImageItem
from smallvision.data.labels import LabelTable, read_labels
from smallvision.data.split import SplitPlan, carve, carve_multilabel
from smallvision.errors import SmallvisionError


def detect_task(table: LabelTable, task: str) -> str:
    """ "multi" unless every row has exactly one label (then "single"); `task` other than "auto" forces it, refused
    for a single-label run whose rows do not hold one label each."""
    one_each = all(len(names) == 1 for _, names in table.rows)
    if task == "auto":
        return "single" if one_each else "multi"
    if task == "single" and not one_each:
        path, names = next((p, n) for p, n in table.rows if len(n) != 1)
        raise SmallvisionError(
            f"{table.source}: --task single needs exactly one label per row, but {path.name} has {len(names)}; "
            "use --task multi (or leave --task out)"
        )
    return task


def _unlisted(table: LabelTable, skipped: list[tuple[Path, str]]) -> None:
    """Report the images beside the labels file that it does not list (never trained on silently)."""
    listed = {p for p, _ in table.rows}
    for base in table.bases:
        if not base.is_dir():
            continue
        files = list_images(base, []) if base.name == "images" else [p for p in base.iterdir() if p.is_file()]
        for p in files:
            if p not in listed and p != table.source and p.suffix.lower() != ".csv" and not p.name.startswith("."):
                skipped.append((p, f"not listed in {table.source.name}; add a row (empty labels: all negative)"))


def scan_labelled(
    root: Path, source: Path, plan: SplitPlan, carve_splits: bool, task: str, split_dirs: dict[str, Path]
) -> DatasetIndex:
    """The index of the images a labels file lists, with their labels and splits: an image inside a train/ val/
    test/ folder of `split_dirs` is in that split, the rest carved (when `carve_splits`) as a class-folder scan
    carves them."""
    table = read_labels(source, root)
    if not table.rows:
        raise SmallvisionError(
            f"{source}: names no image found in {root} or next to it (or in images/ there); check the filename "
            f"column (paths relative to the data folder), or give --labels the labels file of this folder"
        )
    kind = detect_task(table, task)
    skipped = list(table.skipped)
    _unlisted(table, skipped)
    classes = table.labels if kind == "multi" else sorted({names[0] for _, names in table.rows})
    items = []
    for path, names in table.rows:
        digest = read_digest(path, skipped)
        if digest is None:
            continue
        split = next((s for s, d in split_dirs.items() if path.is_relative_to(d)), "train")
        if kind == "multi":
            items.append(ImageItem(path, -1, split, digest, tuple(classes.index(n) for n in names)))
        else:
            items.append(ImageItem(path, classes.index(names[0]), split, digest))
    what = "multi-label: any number of labels per image" if kind == "multi" else "single-label: one label per row"
    notes = [f"task: {what} (from {source.name}; force it with --task single|multi)"]
    if carve_splits and "val" not in split_dirs:
        cut = carve_multilabel if kind == "multi" else carve
        notes += cut(items, classes, plan, test=not split_dirs)
    given = tuple(s for s in SPLITS if s in split_dirs)
    folders = "".join(f" + {s}/" for s in given)
    return DatasetIndex(root, f"images{folders} + {source.name}", classes, items, skipped, notes, kind, given)
