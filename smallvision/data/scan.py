"""Find the images and classes in a folder (or zip), choose the splits (carved by data/split.py), say what was found."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

from smallvision.data.decode import content_digest, is_image_name
from smallvision.data.files import IGNORED_DIRS, list_images, read_digest
from smallvision.data.index import SPLITS, DatasetIndex, ImageItem
from smallvision.data.labels import find_labels_file
from smallvision.data.split import SplitPlan
from smallvision.data.split import carve as carve_split
from smallvision.errors import SmallvisionError

log = logging.getLogger(__name__)

SPLIT_NAMES = {
    "train": ("train", "training", "training_set", "train_set"),
    "val": ("val", "valid", "validation", "validation_set", "val_set"),
    "test": ("test", "testing", "test_set"),
}


def _unpack_zip(path: Path) -> Path:
    """Extract a zip once into the cache (keyed by content), refusing paths that escape the folder."""
    from smallvision.data.cache import cache_root

    digest = content_digest(path.read_bytes())
    dest = cache_root() / "unzipped" / digest
    if (dest / ".complete").exists():
        return dest
    try:
        with zipfile.ZipFile(path) as zf:
            tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
            for member in zf.namelist():
                target = (tmp / member).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise SmallvisionError(f"{path}: zip member {member!r} points outside the archive; refusing it")
            zf.extractall(tmp)
    except zipfile.BadZipFile as e:
        raise SmallvisionError(f"{path}: not a valid zip file ({e})") from e
    (tmp / ".complete").touch()
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_DIRS
    )


def _has_images(folder: Path) -> bool:
    return any(is_image_name(p) for p in folder.iterdir() if p.is_file())


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _subdirs(root):
        for split, names in SPLIT_NAMES.items():
            if d.name.lower() in names:
                if split in found:
                    raise SmallvisionError(
                        f"{root}: both {found[split].name}/ and {d.name}/ look like the {split} split; keep one"
                    )
                found[split] = d
    return found


def _refuse_split_named_class(root: Path, split_dirs: dict[str, Path]) -> None:
    """A folder named like a split (train/, test/) next to folders of images is ambiguous: say so and how to fix it."""
    if not split_dirs:
        return
    named = sorted(d.name for d in split_dirs.values())
    others = [d.name for d in _subdirs(root) if d.name not in named and _has_images(d)]
    if not others:
        return
    listing = ", ".join(f"{n}/" for n in others[:5]) + (" ..." if len(others) > 5 else "")
    splits = " and ".join(f"{n}/" for n in named) + (" sit" if len(named) > 1 else " sits")
    example = ", ".join(f"{s}/{others[0]}/" for s in dict.fromkeys(["train", *named]))
    raise SmallvisionError(
        f"{root}: {splits} next to folders of images ({listing}): is {' / '.join(named)} a class or a split? "
        f"smallvision reads a folder named {' or '.join(named)} as a split, which would leave {listing} out. "
        f"If it is a class, rename it (e.g. {named[0]}_class/). If it is a split, keep every class inside split "
        f"folders ({example}, ...) with no class folder beside them"
    )


def _dataset_root(data: str | Path) -> Path:
    """The folder that holds the dataset: `data` itself, a .zip's unpacked copy, or the one sub-folder that holds it."""
    root = Path(data).expanduser()
    if not root.exists():
        raise SmallvisionError(f"{root}: no such file or folder; give a folder of class folders (or a .zip of one)")
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise SmallvisionError(f"{root}: expected a folder of class folders or a .zip, got a file")
        root = _unpack_zip(root)
    while not _find_split_dirs(root) and not _has_images(root) and find_labels_file(root) is None:
        subs = _subdirs(root)
        if len(subs) != 1 or not _subdirs(subs[0]):
            break
        root = subs[0]
    return root


def _classes(class_files: dict, sources: dict, skipped: list, carve: bool) -> list[str]:
    """The classes: the training split's class folders that hold images (empty ones skipped and reported); refused
    when there are too few, or when another split names a class the training split lacks."""
    train_classes = class_files["train"]
    empty = [name for name, files in train_classes.items() if not files]
    for name in empty:
        skipped.append((sources["train"] / name, "empty class folder; class left out"))
    classes = sorted(name for name, files in train_classes.items() if files)
    if len(classes) < (2 if carve else 1):
        raise SmallvisionError(
            f"{sources['train']}: found {len(classes)} class folder(s) with images ({', '.join(classes) or 'none'}); "
            "a classifier needs at least 2: put each class's images in its own sub-folder, or (several labels per "
            "image) list each image's labels in a labels.csv beside them (filename,labels)"
        )
    for split, per_class in class_files.items():
        unknown = [n for n, f in per_class.items() if f and n not in classes]
        if unknown:
            raise SmallvisionError(
                f"{sources[split]}: class folder(s) {', '.join(unknown)} have no images in the training split; "
                "every class needs training images"
            )
    return classes


def scan(
    data: str | Path,
    plan: SplitPlan | None = None,
    carve: bool = True,
    labels: str | Path | None = None,
    task: str = "auto",
) -> DatasetIndex:
    """Scan a dataset folder or zip: classes, files (with content keys) and train/val/test splits.

    With `carve=False` no validation or test split is carved out (evaluation uses every image as found). A labels
    file (`labels`, or labels.csv in the folder) lists each image's labels; `task` ("auto", "single", "multi")
    forces the task instead of detecting it from the data.
    """
    plan = plan or SplitPlan()
    root = _dataset_root(data)
    split_dirs = _find_split_dirs(root)
    sources = _labels_files(root, labels, split_dirs)
    if sources:  # a labels file says what each image is, whatever folders the images sit in
        from smallvision.data.labelled import scan_labelled

        return scan_labelled(root, sources, plan, carve, task, split_dirs)
    if task == "multi":
        raise SmallvisionError(
            f"{root}: --task multi needs a labels file: put labels.csv (filename,labels with the labels separated "
            "by spaces) in the folder, or give --labels FILE"
        )
    return _scan_class_folders(root, plan, carve)


def _labels_files(root: Path, labels: str | Path | None, split_dirs: dict[str, Path]) -> dict[str, Path]:
    """The labels file(s) that say what the folder's images are: {"": file} for `labels` or the folder's labels.csv,
    {split: file} when its train/ val/ test/ folders each carry one, {} for a folder of class folders."""
    if labels:
        path = Path(labels).expanduser()
        if not path.is_file():
            raise SmallvisionError(f"{path}: no such labels file; give --labels a CSV (filename,labels)")
        return {"": path}
    found = find_labels_file(root)
    per_split = {s: f for s, d in split_dirs.items() if (f := find_labels_file(d)) is not None}
    if found is not None and per_split:
        raise SmallvisionError(
            f"{root}: both {found.name} and {', '.join(str(f.relative_to(root)) for f in per_split.values())} list "
            "labels; keep one labels file for the whole folder, or one in each split folder"
        )
    if found is not None:
        return {"": found}
    missing = [f"{d.name}/" for s, d in split_dirs.items() if s not in per_split]
    if per_split and missing:
        raise SmallvisionError(
            f"{root}: {', '.join(missing)} has no labels.csv while "
            f"{', '.join(f'{split_dirs[s].name}/{f.name}' for s, f in per_split.items())} does; give each split "
            "folder its labels file, or list every image in one labels.csv at the top of the folder"
        )
    return per_split


def _scan_class_folders(root: Path, plan: SplitPlan, carve: bool) -> DatasetIndex:
    """The index of a folder of class folders (or of train/ val/ test/ folders of them)."""
    skipped: list[tuple[Path, str]] = []
    split_dirs = _find_split_dirs(root)
    _refuse_split_named_class(root, split_dirs)
    if split_dirs and "train" not in split_dirs:
        raise SmallvisionError(
            f"{root}: found {', '.join(d.name + '/' for d in split_dirs.values())} but no training folder; "
            "name it train/ (or training/, training_set/)"
        )
    sources = split_dirs or {"train": root}
    class_files: dict[str, dict[str, list[Path]]] = {}
    for split, folder in sources.items():
        if _has_images(folder):
            loose = [p for p in folder.iterdir() if p.is_file() and is_image_name(p)]
            skipped += [(p, "image outside any class folder; move it into one") for p in sorted(loose)]
        class_files[split] = {d.name: list_images(d, skipped) for d in _subdirs(folder)}

    classes = _classes(class_files, sources, skipped, carve)
    items: list[ImageItem] = []
    for split, per_class in class_files.items():
        for name in classes:
            for p in per_class.get(name, []):
                digest = read_digest(p, skipped)
                if digest is not None:
                    items.append(ImageItem(p, classes.index(name), split, digest))

    notes: list[str] = []
    if split_dirs:
        layout = "+".join(s for s in SPLITS if s in split_dirs) + " folders"
    else:
        layout = "one folder of class folders"
    if carve and "val" not in split_dirs:
        notes = carve_split(items, classes, plan, test=not split_dirs)
    given = tuple(s for s in SPLITS if s in split_dirs)
    return DatasetIndex(root, layout, classes, items, skipped, notes, given_splits=given)
