"""A folder's split: stable hash-based carving, and the record of it (split.csv) that a run keeps and re-reads.

A carved file's split depends only on its content digest and the seed, so adding or removing other images never
moves it; the record lets evaluate, export, --resume and compare use the run's own split, never a re-carved one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smallvision import atomic
from smallvision.errors import SmallvisionError

if TYPE_CHECKING:
    from smallvision.data.index import DatasetIndex, ImageItem

COLUMNS = ("path", "digest", "split", "label")
RECORD_NAME = "split.csv"
SHOWN = 5  # paths named in a message before "..."


@dataclass
class SplitPlan:
    """How to carve splits out of a folder that does not provide them."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    min_train_per_class: int = 1
    min_val_per_class: int = 1
    min_test_per_class: int = 1
    seed: int = 0


CARVING_OPTIONS = ("val_fraction", "test_fraction", "min_train_per_class", "min_val_per_class", "min_test_per_class")


def unit(seed: int, split: str, digest: str) -> float:
    """A file's place in [0, 1) for one split: a hash of (seed, split, content digest), so nothing else moves it."""
    h = hashlib.blake2b(f"{seed}:{split}:{digest}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _pick(digests: list[str], fraction: float, minimum: int, reserve: int, seed: int, split: str, name: str) -> list:
    """One class's carved digests: those with u < fraction; topped up to `minimum` files with the lowest-u ones, and
    trimmed (highest u first) to leave `reserve` files behind when it can. Always a lowest-u prefix of the class."""
    if minimum > len(digests):
        raise SmallvisionError(
            f"class {name!r} has {len(digests)} image(s) left, too few for {minimum} in the {split} split; "
            f"add images, or lower --min-{split}-per-class"
        )
    files = Counter(digests)
    u = {d: unit(seed, split, d) for d in files}
    ranked = sorted(files, key=u.__getitem__)
    taken = list(itertools.accumulate((files[d] for d in ranked), initial=0))  # files in ranked[:k]
    k = sum(1 for d in ranked if u[d] < fraction)
    while taken[k] < minimum:
        k += 1
    while k > 0 and taken[k - 1] >= minimum and len(digests) - taken[k] < reserve:
        k -= 1
    return ranked[:k]


def carve(items: list[ImageItem], classes: list[str], plan: SplitPlan, test: bool) -> list[str]:
    """Move training items to val (and first to test when `test` and a test fraction is set), per class by hash;
    identical content moves together. Returns the notes that say how."""
    steps = [("val", plan.val_fraction, plan.min_val_per_class)]
    if test and plan.test_fraction > 0:
        steps.insert(0, ("test", plan.test_fraction, plan.min_test_per_class))
    notes = []
    for k, (split, fraction, minimum) in enumerate(steps):
        reserve = plan.min_train_per_class + sum(m for _, _, m in steps[k + 1 :])
        by_class: dict[int, list[str]] = {c: [] for c in range(len(classes))}
        for it in items:
            if it.split == "train":
                by_class[it.label].append(it.digest)
        chosen: set[str] = set()
        for c, name in enumerate(classes):
            chosen.update(_pick(by_class[c], fraction, minimum, reserve, plan.seed, split, name))
        for it in items:
            if it.split == "train" and it.digest in chosen:
                it.split = split
        notes.append(
            f"{split} split carved from train: {fraction:.0%} per class (hash-based, stratified per class, "
            f"seed {plan.seed}; at least {minimum} per class)"
        )
    counts = Counter(it.label for it in items if it.split == "train")
    short = [classes[c] for c in range(len(classes)) if counts.get(c, 0) < plan.min_train_per_class]
    if short:
        raise SmallvisionError(
            f"class(es) {', '.join(short)} keep fewer than {plan.min_train_per_class} training images after "
            "the split; add images or lower --min-train-per-class"
        )
    return notes


def carve_multilabel(items: list[ImageItem], labels: list[str], plan: SplitPlan, test: bool) -> list[str]:
    """Move training items to val (and test when `test`) by iterative stratification across labels (Sechidis et al.
    2011, the iterative-stratification package), so each label's share in every split is close to the split's share;
    identical content moves together. The files enter in the order of their content hash (not their names), seeded.
    Refused when a carved split holds no labelled image (its mAP would be undefined)."""
    import numpy as np
    from iterstrat.ml_stratifiers import IterativeStratification

    train = [it for it in items if it.split == "train"]
    by_digest: dict[str, set[int]] = {}
    for it in train:
        by_digest.setdefault(it.digest, set()).update(it.labels)
    digests = sorted(by_digest, key=lambda d: unit(plan.seed, "multi", d))
    y = np.zeros((len(digests), len(labels)), dtype=bool)  # bool: the package indexes label columns with it
    for row, d in enumerate(digests):
        y[row, sorted(by_digest[d])] = True
    shares = [plan.test_fraction if test else 0.0, plan.val_fraction]
    r = np.array([*shares, 1 - sum(shares)])
    folds = IterativeStratification(y, r, np.random.RandomState(plan.seed))
    where = {d: ("test", "val", "train")[f] for d, f in zip(digests, folds, strict=True)}
    for it in train:
        it.split = where[it.digest]
    for split in ("val", "test"):
        members = np.array([where[d] == split for d in digests], dtype=bool)
        if members.any() and not y[members].any():
            raise SmallvisionError(
                f"the {split} split carved from {len(digests)} images holds none with a label ({members.sum()} "
                f"all-negative images), so its mAP is undefined; add labelled images or raise the {split} fraction"
            )
    cut = f", {shares[0]:.0%} test" if shares[0] else ""
    notes = [
        f"splits carved from train across labels (iterative stratification: {plan.val_fraction:.0%} val{cut}, "
        f"seed {plan.seed})"
    ]
    val_counts = y[[where[d] == "val" for d in digests]].sum(0)
    rare = [name for j, name in enumerate(labels) if val_counts[j] == 0]
    if rare:
        notes.append(
            f"label(s) too rare to appear in validation: {', '.join(rare)} (their thresholds fall back to the "
            "global one, and validation mAP leaves them out)"
        )
    return notes


def _relative(path: Path, root: Path) -> str:
    """A file's path relative to the data root (POSIX form), absolute when it lies outside."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def label_names(index: DatasetIndex, it: ImageItem) -> str:
    """An item's label as the record writes it: the class, or a multi-label item's labels separated by spaces."""
    if index.task == "multi":
        return " ".join(index.classes[j] for j in it.labels)
    return index.classes[it.label]


def write_record(index: DatasetIndex, target: str | Path) -> None:
    """Write the index's split as CSV (path, digest, split, label), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for it in index.items:
        writer.writerow([_relative(it.path, index.root), it.digest, it.split, label_names(index, it)])
    atomic.write_text(target, buf.getvalue())


def read_record(path: str | Path) -> list[dict[str, str]]:
    """The rows of a split record, refusing a file that is not one."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SmallvisionError(f"{path}: cannot read the run's split record ({e})") from e
    if not rows or any(set(COLUMNS) - set(row) or row["split"] not in ("train", "val", "test") for row in rows):
        raise SmallvisionError(
            f"{path}: not a split record smallvision wrote (it needs rows with columns {', '.join(COLUMNS)} and "
            "splits train/val/test); restore it from the run, or start a new run"
        )
    return rows


def _listing(paths: list[str]) -> str:
    return ", ".join(paths[:SHOWN]) + (", ..." if len(paths) > SHOWN else "")


@dataclass
class SplitChanges:
    """How a folder differs from a run's split record: files new since, recorded files missing or changed."""

    record: Path
    new: list[ImageItem] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    root: Path = Path()
    classes: list[str] = field(default_factory=list)  # what the new items' labels index

    def new_paths(self) -> list[str]:
        """The new files' paths, relative to the data root."""
        return [_relative(it.path, self.root) for it in self.new]

    def new_line(self) -> str:
        """How many files are new since training, and the first few (empty when none)."""
        return f"{len(self.new)} file(s) new since training ({_listing(self.new_paths())})" if self.new else ""

    def lost_line(self) -> str:
        """Which recorded files are missing or changed content (empty when none)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} recorded file(s) missing ({_listing(self.missing)})")
        if self.changed:
            parts.append(f"{len(self.changed)} recorded file(s) changed content ({_listing(self.changed)})")
        return "; ".join(parts)

    def describe(self) -> str:
        """One line naming what changed since the record was written (empty when nothing did)."""
        return "; ".join(p for p in (self.new_line(), self.lost_line()) if p)

    def as_dict(self) -> dict[str, list[str]]:
        """The changes as plain lists of relative paths (for JSON)."""
        return {"new": self.new_paths(), "missing": self.missing, "changed": self.changed}


def _record_classes(rows: list[dict[str, str]], task: str) -> list[str]:
    """The classes (or labels) a record names: each row's class, or every label of a multi-label row."""
    if task == "multi":
        return sorted({name for row in rows for name in row["label"].split()})
    return sorted({row["label"] for row in rows})


def relabelled(it: ImageItem, names: list[str], classes: list[str], **changes) -> ImageItem | None:
    """`it` with its label(s), named by `names` (the list its indices point into), re-indexed into `classes`;
    None when it has a label `classes` lacks."""
    if it.label != -1:
        name = names[it.label]
        return dataclasses.replace(it, label=classes.index(name), **changes) if name in classes else None
    wanted = [names[j] for j in it.labels]
    if any(n not in classes for n in wanted):
        return None
    return dataclasses.replace(it, labels=tuple(classes.index(n) for n in wanted), **changes)


def recorded_index(rows: list[dict[str, str]], found: DatasetIndex, record: Path) -> tuple[DatasetIndex, SplitChanges]:
    """The run's split of the files found now (as scanned with carve=False), and what changed since the record.

    A file keeps its recorded split; a file at a new path whose content is recorded gets that content's split
    (training first); a recorded file whose content changed is named and left out; any other file (or one with a
    class or label the run never saw) is new since training and left out of the index.
    """
    by_path = {row["path"]: row for row in rows}
    by_digest: dict[str, str] = {}
    for row in rows:
        if by_digest.get(row["digest"]) != "train":
            by_digest[row["digest"]] = row["split"]
    classes = _record_classes(rows, found.task)
    changes = SplitChanges(record, root=found.root, classes=found.classes)
    items, seen = [], set()
    for it in found.items:
        rel = _relative(it.path, found.root)
        seen.add(rel)
        row = by_path.get(rel)
        changed = row is not None and row["digest"] != it.digest
        if changed:
            changes.changed.append(rel)
        split = row["split"] if row is not None and not changed else by_digest.get(it.digest)
        if changed and split is None:
            continue  # its old content may have trained the model: named as changed, never scored (not even as new)
        kept = relabelled(it, found.classes, classes, split=split) if split is not None else None
        if kept is None:
            changes.new.append(it)
        else:
            items.append(kept)
    changes.missing = [row["path"] for row in rows if row["path"] not in seen]
    note = f"split as recorded in {record} ({len(rows)} files)"
    return dataclasses.replace(found, classes=classes, items=items, notes=[note]), changes


def with_new(index: DatasetIndex, changes: SplitChanges, split: str) -> DatasetIndex:
    """The index with the files new since the record added to `split` (classes extended by any new class folder or
    label)."""
    new_names = {changes.classes[j] for it in changes.new for j in it.label_set}
    classes = sorted(set(index.classes) | new_names)
    items = [relabelled(it, index.classes, classes) for it in index.items]
    items += [relabelled(it, changes.classes, classes, split=split) for it in changes.new]
    return dataclasses.replace(index, classes=classes, items=items)
