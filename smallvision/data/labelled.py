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


def _unlisted(table: LabelTable, skipped: list[tuple[Path, str]], split_dirs: list[Path]) -> None:
    """Report the images beside the labels file (and in the split folders it covers) that it does not list: never
    trained on, or left out of a split, silently."""
    listed = {p for p, _ in table.rows}
    for base in dict.fromkeys([*table.bases, *split_dirs]):
        if not base.is_dir():
            continue
        deep = base.name == "images" or base in split_dirs
        files = list_images(base, []) if deep else [p for p in base.iterdir() if p.is_file()]
        for p in files:
            if p not in listed and p != table.source and p.suffix.lower() != ".csv" and not p.name.startswith("."):
                skipped.append((p, f"not listed in {table.source.name}; add a row (empty labels: all negative)"))


def _refuse_empty_given_splits(items: list[ImageItem], given: tuple[str, ...], named: str, kind: str) -> None:
    """Refuse a val/ or test/ folder that holds no listed image, or (multi-label) none with a label: its score
    would be undefined, and finding out after training would lose the model."""
    for split in given:
        members = [it for it in items if it.split == split]
        if split != "train" and not members:
            raise SmallvisionError(f"{split}/: holds no image that {named} lists; list its images, or remove {split}/")
        if split != "train" and kind == "multi" and not any(it.labels for it in members):
            raise SmallvisionError(
                f"{split}/: none of its {len(members)} images has a label in {named}, so its mAP is undefined; "
                "add labelled images to it"
            )


def _read_tables(root: Path, sources: dict[str, Path], split_dirs: dict[str, Path]) -> list[tuple[LabelTable, dict]]:
    """Each labels file read, with the split of each of its images: one file for the whole folder (`sources` {"":
    file}; an image inside a train/ val/ test/ folder is in that split, the rest train) or one per split folder."""
    out = []
    for split, source in sources.items():
        table = read_labels(source, split_dirs[split] if split else root)
        where = {
            path: split or next((s for s, d in split_dirs.items() if path.is_relative_to(d)), "train")
            for path, _ in table.rows
        }
        out.append((table, where))
    return out


def _refuse_unseen_labels(tables: list[tuple[LabelTable, dict]]) -> None:
    """Refuse labels that a given val or test split holds and no training image has: no model can learn them."""
    trained = {n for table, where in tables for path, names in table.rows if where[path] == "train" for n in names}
    for table, where in tables:
        for split in ("val", "test"):
            unseen = sorted({n for p, names in table.rows if where[p] == split for n in names} - trained)
            if unseen:
                raise SmallvisionError(
                    f"{table.source}: label(s) {', '.join(unseen[:5])} appear in the {split} split but in no "
                    "training image, so no model can learn them; add training images with them, or remove them "
                    f"from the {split} rows"
                )


def _items(rows: list, classes: list[str], kind: str, skipped: list) -> list[ImageItem]:
    """The index items of the listed (path, label names, split) rows whose content can be read."""
    items = []
    for path, names, split in rows:
        digest = read_digest(path, skipped)
        if digest is None:
            continue
        if kind == "multi":
            items.append(ImageItem(path, -1, split, digest, tuple(classes.index(n) for n in names)))
        else:
            items.append(ImageItem(path, classes.index(names[0]), split, digest))
    return items


def scan_labelled(
    root: Path, sources: dict[str, Path], plan: SplitPlan, carve_splits: bool, task: str, split_dirs: dict[str, Path]
) -> DatasetIndex:
    """The index of the images the labels file(s) list, with their labels and splits (see `_read_tables`); splits
    the folder does not give are carved (when `carve_splits`) as a class-folder scan carves them."""
    tables = _read_tables(root, sources, split_dirs)
    rows = [(path, names, where[path]) for table, where in tables for path, names in table.rows]
    first = tables[0][0]
    if not rows:
        raise SmallvisionError(
            f"{first.source}: names no image found in {root} or next to it (or in images/ there); check the filename "
            f"column (paths relative to the data folder), or give --labels the labels file of this folder"
        )
    every = sorted({n for table, _ in tables for n in table.labels})
    kind = detect_task(LabelTable(first.source, [(p, n) for p, n, _ in rows], every), task)
    _refuse_unseen_labels(tables)
    skipped = [bad for table, _ in tables for bad in table.skipped]
    for (table, _), split in zip(tables, sources, strict=True):
        _unlisted(table, skipped, [] if split else list(split_dirs.values()))
    classes = every if kind == "multi" else sorted({names[0] for _, names, _ in rows})
    items = _items(rows, classes, kind, skipped)
    what = "multi-label: any number of labels per image" if kind == "multi" else "single-label: one label per row"
    named = " + ".join(str(f.relative_to(root)) if f.is_relative_to(root) else f.name for f in sources.values())
    notes = [f"task: {what} (from {named}; force it with --task single|multi)"]
    if carve_splits and "val" not in split_dirs:
        cut = carve_multilabel if kind == "multi" else carve
        notes += cut(items, classes, plan, test=not split_dirs)
    given = tuple(s for s in SPLITS if s in split_dirs)
    _refuse_empty_given_splits(items, given, named, kind)
    folders = "".join(f" + {s}/" for s in given)
    return DatasetIndex(root, f"images{folders} + {named}", classes, items, skipped, notes, kind, given)
