"""A labels file beside a folder of images: which labels each image has (several per image, or none).

Two layouts, as fastai and Kaggle write them: `filename,labels` with the labels separated by spaces, or a one-hot
table `filename,<label>,<label>,...` of 0/1. A bad row (a file that is missing, unreadable or listed twice, a
malformed line) is reported with its row number and skipped, as a bad image is.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from smallvision.data.decode import is_image_name
from smallvision.errors import SmallvisionError

LABEL_FILES = ("labels.csv",)
NAME_COLUMNS = ("filename", "file", "image", "path", "fname")
LIST_COLUMNS = ("labels", "tags", "label")


@dataclass
class LabelTable:
    """A labels file read: each listed image's path and label names, every label, and the rows skipped."""

    source: Path
    rows: list[tuple[Path, tuple[str, ...]]]
    labels: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    bases: list[Path] = field(default_factory=list)  # the folders its file names were looked up in, in order


def find_labels_file(root: Path) -> Path | None:
    """The labels file a folder carries (labels.csv at its top), or None."""
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    return None


def _image_path(name: str, bases: list[Path]) -> Path | None:
    """Where a listed file is: the first of the base folders that holds it."""
    for base in bases:
        p = base / name
        if p.is_file():
            return p
    return None


def _header(path: Path, header: list[str]) -> tuple[str, list[str] | None]:
    """The file's layout from its header: ("list", None) or ("onehot", label columns); refused when neither."""
    cols = [c.strip() for c in header]
    if len(cols) < 2 or cols[0].lower() not in NAME_COLUMNS:
        raise SmallvisionError(
            f"{path}: the first line must be a header naming the file column first (filename,labels for "
            "space-separated labels, or filename,<label>,<label>,... for a 0/1 table); found "
            f"{','.join(cols) or 'nothing'}"
        )
    if len(cols) == 2 and cols[1].lower() in LIST_COLUMNS:
        return "list", None
    named = [c for c in cols[1:] if c.lower() in LIST_COLUMNS]
    if named:
        raise SmallvisionError(
            f"{path}: column {named[0]!r} beside other columns ({','.join(cols)}): a labels list is filename,labels "
            "alone; remove the other column(s), or write a 0/1 table with one column per label"
        )
    return "onehot", cols[1:]


def _row_labels(kind: str, fields: list[str], columns: list[str] | None) -> tuple[str, ...]:
    """One row's label names; ValueError with the reason when the row is malformed."""
    if kind == "list":
        if len(fields) != 2:
            raise ValueError(f"expected 2 fields (filename,labels), found {len(fields)}")
        return tuple(dict.fromkeys(fields[1].split()))
    assert columns is not None
    if len(fields) != len(columns) + 1:
        raise ValueError(f"expected {len(columns) + 1} fields, found {len(fields)}")
    values = [v.strip() for v in fields[1:]]
    bad = [c for c, v in zip(columns, values, strict=True) if v not in ("0", "1")]
    if bad:
        raise ValueError(f"column {bad[0]} is {values[columns.index(bad[0])]!r}, not 0 or 1")
    return tuple(c for c, v in zip(columns, values, strict=True) if v == "1")


def read_labels(path: str | Path, root: Path | None = None) -> LabelTable:
    """Read a labels file; its file names resolve in the data folder `root` (or its images/ folder) first, as
    fastai's and Keras' readers take them, then next to the labels file (or in its images/ folder)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SmallvisionError(f"{path}: cannot read the labels file ({e}); give a UTF-8 CSV") from e
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        raise SmallvisionError(
            f"{path}: the labels file is empty; write a header (filename,labels) and one row per image"
        )
    kind, columns = _header(path, lines[0])
    folders = [root, path.parent] if root is not None else [path.parent]
    bases = list(dict.fromkeys(b for f in folders for b in (f, f / "images")))
    where_looked = " or ".join(f"{f}" for f in dict.fromkeys(folders)) + " (or images/ there)"
    rows, skipped, seen = [], [], {}
    for number, fields in enumerate(lines[1:], start=2):
        if not any(f.strip() for f in fields):
            continue
        where = Path(f"{path.name}:{number}")
        name = fields[0].strip()
        try:
            names = _row_labels(kind, fields, columns)
        except ValueError as e:
            skipped.append((where, f"malformed row: {e}; row skipped"))
            continue
        image = _image_path(name, bases)
        if image is None or not is_image_name(image):
            why = "no such image file" if image is None else "not an image file extension"
            skipped.append((where, f"{name}: {why} in {where_looked}; row skipped"))
        elif image in seen:
            skipped.append((where, f"{name}: listed twice (first on row {seen[image]}); the first row is kept"))
        else:
            seen[image] = number
            rows.append((image, names))
    labels = sorted({n for _, names in rows for n in names} | set(columns or ()))
    return LabelTable(path, rows, labels, skipped, bases)
