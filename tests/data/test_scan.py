"""Scanning: layouts, split spellings, stratified carving with minimums, zips, and reported bad files."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter

import pytest
from PIL import Image

from smallvision.data.scan import SplitPlan, scan
from smallvision.errors import SmallvisionError
from tests.conftest import shared_dataset
from tests.imagegen import make_class_folder


def _counts(index, split):
    return Counter(index.classes[it.label] for it in index.split(split))


def test_train_val_layout(tmp_path):
    make_class_folder(tmp_path / "train", 4, seed=1)
    make_class_folder(tmp_path / "val", 2, seed=2)
    index = scan(tmp_path)
    assert index.layout == "train+val folders"
    assert index.classes == ["circle", "square", "triangle"]
    assert _counts(index, "train") == {"circle": 4, "square": 4, "triangle": 4}
    assert _counts(index, "val") == {"circle": 2, "square": 2, "triangle": 2}


@pytest.mark.parametrize(
    "train,val,test", [("training", "validation", "testing"), ("training_set", "valid", "test_set")]
)
def test_split_spellings(tmp_path, train, val, test):
    make_class_folder(tmp_path / train, 3, seed=1)
    make_class_folder(tmp_path / val, 2, seed=2)
    make_class_folder(tmp_path / test, 2, seed=3)
    index = scan(tmp_path)
    assert {s: sum(_counts(index, s).values()) for s in ("train", "val", "test")} == {
        "train": 9,
        "val": 6,
        "test": 6,
    }


def test_train_test_layout_carves_val_from_train_only(tmp_path):
    make_class_folder(tmp_path / "train", 10, seed=1)
    make_class_folder(tmp_path / "test", 3, seed=3)
    index = scan(tmp_path, SplitPlan(val_fraction=0.2, seed=0))
    val = _counts(index, "val")  # hash-based: about 20% per class, at least one
    assert set(val) == {"circle", "square", "triangle"} and sum(val.values()) + len(index.split("train")) == 30
    assert all("test" in it.path.parent.parent.name for it in index.split("test"))
    assert all(it.path.parent.parent.name == "train" for it in index.split("val"))
    assert sum(_counts(index, "test").values()) == 9


def test_single_folder_split_is_stratified_seeded_and_respects_minimums(tmp_path):
    make_class_folder(tmp_path, 20, seed=1)
    a = scan(tmp_path, SplitPlan(val_fraction=0.1, test_fraction=0.2, min_val_per_class=3, seed=7))
    b = scan(tmp_path, SplitPlan(val_fraction=0.1, test_fraction=0.2, min_val_per_class=3, seed=7))
    c = scan(tmp_path, SplitPlan(val_fraction=0.1, test_fraction=0.2, min_val_per_class=3, seed=8))
    assert all(n >= 3 for n in _counts(a, "val").values()) and len(_counts(a, "val")) == 3  # topped up to 3
    assert len(_counts(a, "test")) == 3 and a.notes[0].endswith(
        "(hash-based, stratified per class, seed 7; at least 1 per class)"
    )
    assert [(it.path, it.split) for it in a.items] == [(it.path, it.split) for it in b.items]
    assert [it.split for it in a.items] != [it.split for it in c.items]
    assert a.layout == "one folder of class folders"


def _val_names(index, cls):
    return {it.path.name for it in index.split("val") if index.classes[it.label] == cls}


def test_adding_or_removing_an_image_moves_no_other_image(tmp_path):
    """A class going from 50 to 51 images (or 49) keeps every one of its val images; no image changes split."""
    make_class_folder(tmp_path, 50, classes=("a", "b"), seed=1)
    before = scan(tmp_path, SplitPlan(val_fraction=0.2, seed=0))
    make_class_folder(tmp_path, 1, classes=("a",), seed=2)  # one new image in class a
    added = scan(tmp_path, SplitPlan(val_fraction=0.2, seed=0))
    assert _val_names(before, "a") <= _val_names(added, "a") and len(_val_names(before, "a")) >= 5
    assert {it.path: it.split for it in before.items}.items() <= {it.path: it.split for it in added.items}.items()
    gone = sorted((tmp_path / "a").iterdir())[0]
    gone.unlink()
    removed = scan(tmp_path, SplitPlan(val_fraction=0.2, seed=0))
    assert {it.path: it.split for it in removed.items}.items() <= {it.path: it.split for it in added.items}.items()


def test_identical_content_lands_in_one_split(tmp_path):
    make_class_folder(tmp_path, 20, classes=("a", "b"), seed=1)
    for p in sorted(tmp_path.rglob("*.png")):
        shutil.copy(p, p.with_name("copy_" + p.name))
    index = scan(tmp_path, SplitPlan(val_fraction=0.3, test_fraction=0.3, seed=0))
    splits: dict[str, set[str]] = {}
    for it in index.items:
        splits.setdefault(it.digest, set()).add(it.split)
    assert len(splits) == 40 and all(len(s) == 1 for s in splits.values())


def test_a_class_the_fraction_would_empty_keeps_its_training_minimum(tmp_path):
    """The hash rule may pick every image of a small class; the highest-hash ones go back to train."""
    make_class_folder(tmp_path, 2, classes=("a", "b"), seed=1)
    index = scan(tmp_path, SplitPlan(val_fraction=0.9, seed=0))
    assert _counts(index, "train") == {"a": 1, "b": 1} and _counts(index, "val") == {"a": 1, "b": 1}


def test_too_small_class_is_a_clear_error(tmp_path):
    make_class_folder(tmp_path, 10, classes=("big", "other"), seed=1)
    make_class_folder(tmp_path, 3, classes=("tiny",), seed=2)
    with pytest.raises(SmallvisionError, match=r"'tiny' has 3 image\(s\).*--min-val-per-class"):
        scan(tmp_path, SplitPlan(min_val_per_class=5))
    with pytest.raises(SmallvisionError, match="tiny.*fewer than 50 training images"):
        scan(tmp_path, SplitPlan(min_train_per_class=50))


def test_zip_of_a_dataset_with_a_wrapper_folder(tmp_path):
    src = tmp_path / "src" / "mydata"
    make_class_folder(src / "train", 3, seed=1)
    make_class_folder(src / "val", 2, seed=2)
    archive = tmp_path / "mydata.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(tmp_path / "src"))
    index = scan(archive)
    assert index.layout == "train+val folders" and len(index.items) == 15


def test_extensions_hidden_files_and_non_images(tmp_path):
    make_class_folder(tmp_path / "train", 3, classes=("a", "b"), seed=1)
    make_class_folder(tmp_path / "val", 1, classes=("a", "b"), seed=2)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "UPPER.JPG")
    (tmp_path / "train" / "a" / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "train" / "a" / "notes.txt").write_text("hello")
    index = scan(tmp_path)
    names = {it.path.name for it in index.items}
    assert "UPPER.JPG" in names and ".hidden.png" not in names
    assert [(p.name, "extension" in r) for p, r in index.skipped] == [("notes.txt", True)]


def test_empty_class_is_reported_and_one_class_is_an_error(tmp_path):
    make_class_folder(tmp_path / "train", 3, classes=("a", "b"), seed=1)
    make_class_folder(tmp_path / "val", 1, classes=("a", "b"), seed=2)
    (tmp_path / "train" / "empty").mkdir()
    index = scan(tmp_path)
    assert index.classes == ["a", "b"]
    assert any(p.name == "empty" and "empty class folder" in r for p, r in index.skipped)
    shutil.rmtree(tmp_path / "train" / "b")
    shutil.rmtree(tmp_path / "val" / "b")
    with pytest.raises(SmallvisionError, match="at least 2"):
        scan(tmp_path)


def test_missing_folder_and_plain_file_are_clear_errors(tmp_path):
    with pytest.raises(SmallvisionError, match="no such file or folder"):
        scan(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SmallvisionError, match="expected a folder"):
        scan(tmp_path / "x.txt")


def test_symlink_loop_is_not_followed_forever(tmp_path):
    make_class_folder(tmp_path / "train", 2, classes=("a", "b"), seed=1)
    make_class_folder(tmp_path / "val", 1, classes=("a", "b"), seed=2)
    (tmp_path / "train" / "a" / "loop").symlink_to(tmp_path / "train" / "a", target_is_directory=True)
    index = scan(tmp_path)
    assert len(index.split("train")) == 4
    assert any("symlink loop" in r for _, r in index.skipped)


def test_hymenoptera_layout_and_placeholder_gif():
    index = scan(shared_dataset("hymenoptera"))
    assert index.classes == ["ants", "bees"]
    assert len(index.split("train")) == 245 and len(index.split("val")) == 153
    assert any(it.path.name == "imageNotFound.gif" for it in index.items)


@pytest.mark.parametrize("split_name", ["test", "train"])
def test_class_folder_named_like_a_split_is_explained(tmp_path, split_name):
    make_class_folder(tmp_path, 3, classes=("cat", "dog", split_name), seed=1)
    with pytest.raises(SmallvisionError) as err:
        scan(tmp_path)
    msg = str(err.value)
    assert f"is {split_name} a class or a split?" in msg and "cat/, dog/" in msg
    assert f"rename it (e.g. {split_name}_class/)" in msg and f"{split_name}/cat/" in msg
    (tmp_path / split_name).rename(tmp_path / f"{split_name}_class")
    assert scan(tmp_path).classes == ["cat", "dog", f"{split_name}_class"]
