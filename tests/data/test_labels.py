"""A labels file beside a folder of images: both layouts, bad rows by row number, the task detected or forced, and
splits carved across labels (iterative stratification) that a re-scan reproduces."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from smallvision.data.scan import SplitPlan, scan
from smallvision.errors import SmallvisionError
from tests.conftest import shared_dataset
from tests.imagegen import SHAPES, make_multilabel_folder


@pytest.fixture
def labelled(tmp_path):
    return make_multilabel_folder(tmp_path / "ml", n=60, seed=3)


def _labels_of(index) -> dict[str, set[str]]:
    return {it.path.name: {index.classes[j] for j in it.labels} for it in index.items}


def test_a_list_and_a_one_hot_table_read_the_same_labels(tmp_path):
    listed = scan(make_multilabel_folder(tmp_path / "a", n=30, seed=1), carve=False)
    onehot = scan(make_multilabel_folder(tmp_path / "b", n=30, seed=1, onehot=True), carve=False)
    assert listed.task == onehot.task == "multi" and listed.classes == onehot.classes == sorted(SHAPES)
    assert _labels_of(listed) == _labels_of(onehot)
    rows = (tmp_path / "a" / "labels.csv").read_text().splitlines()[1:]
    expected = {name: set(labels.split()) for name, labels in (r.split(",") for r in rows)}
    assert _labels_of(listed) == expected
    assert any(not labels for labels in expected.values())  # an image with no label is an all-negative example
    assert "task: multi-label" in listed.table() and "images" in listed.table()


def test_bad_rows_are_named_by_row_number_and_skipped(labelled):
    csv = labelled / "labels.csv"
    lines = csv.read_text().splitlines()
    first = lines[1].split(",")[0]
    lines += [
        "missing.png,circle",  # row 62: no such file
        f"{first},square",  # row 63: listed twice
        "img_3_002.png,circle,extra",  # row 64: malformed (3 fields)
    ]
    (labelled / "images" / "stray.png").write_bytes((labelled / "images" / first).read_bytes())
    csv.write_text("\n".join(lines) + "\n")
    index = scan(labelled, carve=False)
    reasons = {str(p): r for p, r in index.skipped}
    assert "no such image file" in reasons["labels.csv:62"]
    assert "listed twice (first on row 2)" in reasons["labels.csv:63"]
    assert "malformed row: expected 2 fields" in reasons["labels.csv:64"]
    assert "not listed in labels.csv" in reasons[str(labelled / "images" / "stray.png")]
    assert len(index.items) == 60


def test_a_one_hot_cell_that_is_not_0_or_1_is_a_bad_row(tmp_path):
    root = make_multilabel_folder(tmp_path / "oh", n=20, seed=2, onehot=True)
    lines = (root / "labels.csv").read_text().splitlines()
    name = lines[3].split(",")[0]
    lines[3] = f"{name},1,yes,0"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    index = scan(root, carve=False)
    assert "column square is 'yes', not 0 or 1" in dict((str(p), r) for p, r in index.skipped)["labels.csv:4"]
    assert name not in {it.path.name for it in index.items}


@pytest.mark.parametrize(
    "header,message",
    [
        ("path_to,labels", "the first line must be a header naming the file column first"),
        ("filename,labels,notes", "column 'labels' beside other columns"),
    ],
)
def test_a_header_that_is_neither_layout_is_refused_with_the_fix(labelled, header, message):
    csv = labelled / "labels.csv"
    csv.write_text("\n".join([header, *csv.read_text().splitlines()[1:]]) + "\n")
    with pytest.raises(SmallvisionError, match=message):
        scan(labelled, carve=False)


def test_a_labels_file_naming_no_image_and_a_multi_task_without_one_are_refused(labelled, tmp_path):
    other = tmp_path / "empty.csv"
    other.write_text("filename,labels\nnope.png,circle\n")
    with pytest.raises(SmallvisionError, match="names no image found in"):
        scan(labelled, labels=other, carve=False)
    folders = tmp_path / "folders"
    shutil.copytree(labelled / "images", folders / "all")
    with pytest.raises(SmallvisionError, match="--task multi needs a labels file"):
        scan(folders, task="multi", carve=False)


def test_the_task_is_detected_from_the_rows_and_can_be_forced(labelled):
    csv = labelled / "labels.csv"
    rows = [r.split(",") for r in csv.read_text().splitlines()[1:]]
    single = [f"{name},{labels.split()[0]}" for name, labels in rows if labels]
    csv.write_text("\n".join(["filename,labels", *single]) + "\n")
    index = scan(labelled, carve=False)
    assert index.task == "single" and index.classes == sorted({s.split(",")[1] for s in single})
    assert {it.path.name: index.classes[it.label] for it in index.items} == dict(s.split(",") for s in single)
    assert scan(labelled, carve=False, task="multi").task == "multi"
    csv.write_text("\n".join(["filename,labels", *(f"{n},{labels}" for n, labels in rows)]) + "\n")
    with pytest.raises(SmallvisionError, match="--task single needs exactly one label per row"):
        scan(labelled, carve=False, task="single")


def test_splits_are_carved_across_labels_and_a_rescan_reproduces_them(tmp_path):
    root = make_multilabel_folder(tmp_path / "big", n=120, seed=5)
    plan = SplitPlan(val_fraction=0.2, test_fraction=0.2, seed=0)
    index = scan(root, plan)
    counts = index.counts()
    sizes = {s: sum(1 for it in index.items if it.split == s) for s in ("train", "val", "test")}
    assert sizes["val"] == pytest.approx(24, abs=2) and sizes["test"] == pytest.approx(24, abs=2)
    for name in index.classes:  # each label's share in val and test is close to the split's share
        total = sum(counts[s][name] for s in counts)
        assert counts["val"][name] == pytest.approx(0.2 * total, abs=2), name
        assert counts["test"][name] == pytest.approx(0.2 * total, abs=2), name
    again = scan(root, plan)
    assert [(it.path, it.split) for it in again.items] == [(it.path, it.split) for it in index.items]
    other = scan(root, SplitPlan(val_fraction=0.2, test_fraction=0.2, seed=1))
    assert [it.split for it in other.items] != [it.split for it in index.items]


def test_a_label_too_rare_for_validation_is_named(tmp_path):
    root = make_multilabel_folder(tmp_path / "rare", n=40, seed=6, kinds=("circle", "square"))
    csv = root / "labels.csv"
    lines = csv.read_text().splitlines()
    name = lines[1].split(",")[0]
    lines[1] = f"{name},circle unicorn"
    csv.write_text("\n".join(lines) + "\n")
    index = scan(root, SplitPlan(val_fraction=0.2))
    unicorn = index.classes.index("unicorn")
    assert [it.split for it in index.items if unicorn in it.labels] == ["train"]
    assert any("too rare to appear in validation: unicorn" in n for n in index.notes)


def test_the_posters_labels_file_reads_with_its_duplicate_row_named():
    root = shared_dataset("posters_ml")
    index = scan(root, SplitPlan(val_fraction=0.2, test_fraction=0.2, seed=0))
    assert index.task == "multi" and len(index.classes) == 23 and len(index.items) == 2494
    assert [r for p, r in index.skipped if str(p) == "labels.csv:2416"], index.skipped
    mean = np.mean([len(it.labels) for it in index.items])
    assert 2.2 < mean < 2.5
    counts = index.counts()
    assert all(counts["val"][n] > 0 and counts["test"][n] > 0 for n in index.classes)  # News has 9 images


def test_a_zip_of_a_labelled_folder_reads_as_the_folder(labelled, tmp_path):
    archive = shutil.make_archive(str(tmp_path / "posters"), "zip", labelled.parent, labelled.name)
    zipped, plain = scan(archive, carve=False), scan(labelled, carve=False)
    assert zipped.task == "multi" and zipped.layout == "images + labels.csv"
    assert _labels_of(zipped) == _labels_of(plain)


def test_a_folder_of_loose_images_says_how_to_label_them(tmp_path):
    root = make_multilabel_folder(tmp_path / "loose", n=6, seed=1)
    (root / "labels.csv").unlink()
    for f in (root / "images").iterdir():
        f.rename(root / f.name)
    with pytest.raises(SmallvisionError, match="list each image's labels in a labels.csv"):
        scan(root)


def test_train_and_val_folders_beside_a_labels_file_give_their_splits(labelled):
    csv = labelled / "labels.csv"
    rows = [r.split(",") for r in csv.read_text().splitlines()[1:]]
    for k, (name, _) in enumerate(rows):
        split = "val" if k % 4 == 0 else "train"
        (labelled / split).mkdir(exist_ok=True)
        (labelled / "images" / name).rename(labelled / split / name)
        rows[k][0] = f"{split}/{name}"
    csv.write_text("\n".join(["filename,labels", *(",".join(r) for r in rows)]) + "\n")
    index = scan(labelled, SplitPlan(val_fraction=0.2, test_fraction=0.2))
    assert index.given_splits == ("train", "val") and "train/ + val/" in index.layout
    assert {it.path.parent.name for it in index.split("val")} == {"val"} and len(index.split("val")) == 15
    assert not index.split("test")  # given folders are the split: nothing is carved from them


def test_a_labels_file_elsewhere_names_images_relative_to_the_data_folder(labelled, tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    lines = (labelled / "labels.csv").read_text().splitlines()
    (labelled / "labels.csv").unlink()
    (meta / "tags.csv").write_text("\n".join([lines[0], *(f"images/{r}" for r in lines[1:])]) + "\n")
    index = scan(labelled, carve=False, labels=meta / "tags.csv")
    assert len(index.items) == 60 and not index.skipped


def test_a_carved_split_with_no_labelled_image_is_refused(tmp_path):
    root = make_multilabel_folder(tmp_path / "neg", n=30, seed=2)
    csv = root / "labels.csv"
    lines = csv.read_text().splitlines()
    names = [r.split(",")[0] for r in lines[1:]]
    csv.write_text("\n".join([lines[0], *(f"{n}," for n in names[1:]), f"{names[0]},circle"]) + "\n")
    with pytest.raises(SmallvisionError, match="split carved from 30 images holds none with a label"):
        scan(root, SplitPlan(val_fraction=0.2))


def _split_folders(root, rows: list[list[str]], every: int = 4) -> None:
    """Move every `every`-th listed image into val/, the rest into train/, each folder with its own labels.csv."""
    per_split: dict[str, list[str]] = {"train": [], "val": []}
    for k, (name, labels) in enumerate(rows):
        split = "val" if k % every == 0 else "train"
        (root / split).mkdir(exist_ok=True)
        (root / "images" / name).rename(root / split / name)
        per_split[split].append(f"{name},{labels}")
    (root / "labels.csv").unlink()
    for split, lines in per_split.items():
        (root / split / "labels.csv").write_text("\n".join(["filename,labels", *lines]) + "\n")


def test_train_and_val_folders_with_their_own_labels_files_give_their_splits(labelled):
    rows = [r.split(",") for r in (labelled / "labels.csv").read_text().splitlines()[1:]]
    _split_folders(labelled, rows)
    index = scan(labelled, SplitPlan(val_fraction=0.2, test_fraction=0.2))
    assert index.task == "multi" and index.given_splits == ("train", "val") and index.classes == sorted(SHAPES)
    assert {it.path.name for it in index.split("val")} == {r[0] for k, r in enumerate(rows) if k % 4 == 0}
    assert _labels_of(index) == {name: set(labels.split()) for name, labels in rows}


def test_a_label_given_only_in_validation_is_refused_naming_the_file(labelled):
    rows = [r.split(",") for r in (labelled / "labels.csv").read_text().splitlines()[1:]]
    rows[0][1] = "circle unicorn"  # row 0 goes to val/
    _split_folders(labelled, rows)
    with pytest.raises(SmallvisionError, match=r"val/labels.csv: label\(s\) unicorn appear in the val split but in no"):
        scan(labelled)
    (labelled / "train" / "labels.csv").unlink()
    with pytest.raises(SmallvisionError, match=r"train/ has no labels.csv"):
        scan(labelled)


def _first_to_val(root, n: int) -> list[list[str]]:
    """Move the first `n` listed images into val/; the labels file's rows, unchanged."""
    rows = [r.split(",") for r in (root / "labels.csv").read_text().splitlines()[1:]]
    (root / "val").mkdir()
    for name, _ in rows[:n]:
        (root / "images" / name).rename(root / "val" / name)
    return rows


def test_a_top_level_labels_file_with_split_folders_reports_what_it_leaves_out(labelled):
    rows = _first_to_val(labelled, 6)
    listed = [f"val/{n},{lab}" for n, lab in rows[1:6]] + [f"{n},{lab}" for n, lab in rows[6:]]  # rows[0] unlisted
    (labelled / "labels.csv").write_text("\n".join(["filename,labels", *listed]) + "\n")
    index = scan(labelled)
    assert len(index.split("val")) == 5
    unlisted = [r for p, r in index.skipped if p.name == rows[0][0]]
    assert unlisted == ["not listed in labels.csv; add a row (empty labels: all negative)"]
    (labelled / "val" / "labels.csv").write_text("filename,labels\n")
    with pytest.raises(SmallvisionError, match="both labels.csv and val/labels.csv list labels"):
        scan(labelled)


def test_a_given_val_folder_without_a_labelled_image_is_refused_before_training(labelled):
    rows = _first_to_val(labelled, 5)
    lines = [f"val/{n}," for n, _ in rows[:5]] + [",".join(r) for r in rows[5:]]
    (labelled / "labels.csv").write_text("\n".join(["filename,labels", *lines]) + "\n")
    with pytest.raises(SmallvisionError, match="val/: none of its 5 images has a label in labels.csv"):
        scan(labelled)
