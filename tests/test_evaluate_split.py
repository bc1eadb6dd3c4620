"""`evaluate` scores the run's held-out split as recorded in split.csv, never its training images unless asked; files
added since training are named and left out, and `--resume` keeps (or refuses to change) the recorded split."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smallvision import api
from smallvision.cli import app
from smallvision.data.decode import content_digest
from smallvision.errors import SmallvisionError
from tests.imagegen import make_class_folder


@pytest.fixture(scope="module")
def single_folder_run(tmp_path_factory):
    """A features run on one folder of class folders, with a test split carved by its split plan."""
    root = tmp_path_factory.mktemp("single")
    data = make_class_folder(root / "photos", 10, seed=4)
    run = api.train(data, recipe="features", image_size=64, epochs=3, test_fraction=0.2, out=root / "run", report=False)
    return data, run


def test_evaluate_scores_the_runs_own_test_split(single_folder_run):
    data, run = single_folder_run
    m = api.evaluate(run.model_dir, data)
    assert m["split"] == "test" and m["n"] == run.metrics["test"]["n"] >= 3  # at least one per class
    assert "the run's own test split" in m["split_reason"] and "split.csv" in m["split_reason"]
    val = api.evaluate(run.model_dir, data, split="val")
    assert val["n"] == run.metrics["val"]["n"]


def test_evaluate_refuses_training_images_unless_asked(single_folder_run, tmp_path):
    data, run = single_folder_run
    moved = shutil.copytree(run.model_dir, tmp_path / "model")  # no run folder around it: nothing says the split
    with pytest.raises(SmallvisionError, match=r"--config RUN/config.yaml.*--split all"):
        api.evaluate(moved, data)
    again = api.evaluate(moved, data, config=run.run_dir / "config.yaml")
    assert again["split"] == "test" and again["n"] == run.metrics["test"]["n"]
    every = api.evaluate(moved, data, split="all")
    assert every["split"] == "all" and every["n"] == 30 and "training images" in every["split_reason"]
    copy = shutil.copytree(data, tmp_path / "copy")  # another folder holding the training images is refused
    with pytest.raises(SmallvisionError, match=r"trained this model.*--split all"):
        api.evaluate(run.model_dir, copy)
    new = make_class_folder(tmp_path / "new", 2, seed=9)  # unseen images are scored whole
    fresh = api.evaluate(run.model_dir, new)
    assert fresh["split"] == "all" and fresh["n"] == 6 and "none is in the training split" in fresh["split_reason"]
    gone = shutil.copytree(run.run_dir, tmp_path / "gone")  # the run's data folder moved away: split.csv still says
    config = gone / "config.yaml"
    config.write_text(config.read_text().replace(str(data), str(tmp_path / "moved")))
    assert "none is in the training split" in api.evaluate(gone / "model", new)["split_reason"]
    (gone / "split.csv").unlink()  # a run without a split record (older smallvision): nothing to compare with
    with pytest.raises(SmallvisionError, match=r"no split.csv in .*gone.*--split all"):
        api.evaluate(gone / "model", new)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "split.csv", newline="") as f:
        return list(csv.DictReader(f))


def _copy_run(run, data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the run folder and its data folder, the copied config naming the copied data (free to change)."""
    photos = shutil.copytree(data, tmp_path / "photos")
    run_dir = shutil.copytree(run.run_dir, tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace(str(data), str(photos)))
    return photos, run_dir


def test_the_run_records_its_split_in_split_csv(single_folder_run):
    data, run = single_folder_run
    rows = _rows(run.run_dir)
    assert list(rows[0]) == ["path", "digest", "split", "label"] and len(rows) == 30
    assert all(r["path"].split("/")[0] == r["label"] for r in rows)  # relative to the data folder
    assert all(content_digest((data / r["path"]).read_bytes()) == r["digest"] for r in rows)
    counts = Counter(r["split"] for r in rows)
    assert counts["test"] == run.metrics["test"]["n"] and counts["val"] == run.metrics["val"]["n"]
    assert counts["train"] == 30 - counts["test"] - counts["val"] > 0


def test_photos_added_after_training_are_named_and_left_out(single_folder_run, tmp_path):
    """After adding photos, evaluate scores exactly the recorded test split; the new photos are named."""
    data, run = single_folder_run
    photos, run_dir = _copy_run(run, data, tmp_path)
    make_class_folder(photos, 2, seed=11)  # 6 photos added since training
    recorded = sorted(r["path"] for r in _rows(run_dir) if r["split"] == "test")
    m = api.evaluate(run_dir / "model", photos)
    assert m["split"] == "test" and m["n"] == len(recorded) == run.metrics["test"]["n"]
    assert len(m["split_changes"]["new"]) == 6 and all("_11_" in p for p in m["split_changes"]["new"])
    assert "6 file(s) new since training (circle/circle_11_000.png" in m["split_reason"]
    assert "left out (--include-new scores them too)" in m["split_reason"]
    (photos / recorded[0]).unlink()  # a recorded test photo deleted, another overwritten: named, not scored
    shutil.copy(photos / m["split_changes"]["new"][0], photos / recorded[1])
    changed = api.evaluate(run_dir / "model", photos)
    assert changed["split_changes"]["missing"] == [recorded[0]] and changed["split_changes"]["changed"] == [recorded[1]]
    assert changed["n"] == len(recorded) - 2 and "1 recorded file(s) missing" in changed["split_reason"]
    trained = next(r["path"] for r in _rows(run_dir) if r["split"] == "train")  # a training photo overwritten:
    shutil.copy(photos / m["split_changes"]["new"][1], photos / trained)  # its old content trained the model
    included = api.evaluate(run_dir / "model", photos, include_new=True)
    assert trained in included["split_changes"]["changed"] and trained not in included["split_changes"]["new"]
    assert included["n"] == len(recorded) - 2 + 6  # the six new photos, never the changed training photo


def test_cli_evaluate_include_new(single_folder_run, tmp_path):
    data, run = single_folder_run
    photos, run_dir = _copy_run(run, data, tmp_path)
    make_class_folder(photos, 1, seed=12)
    args = ["evaluate", str(run_dir / "model"), str(photos)]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert f"n={run.metrics['test']['n']} " in plain.output and "3 file(s) new since training" in plain.output
    done = CliRunner().invoke(app, [*args, "--include-new", "--json"])
    assert done.exit_code == 0, done.output
    m = json.loads(done.output[done.output.index("{") :])
    assert m["n"] == run.metrics["test"]["n"] + 3 and "as asked (--include-new)" in m["split_reason"]
    assert m["split_changes"]["new_included"] and len(m["split_changes"]["new"]) == 3
    with pytest.raises(SmallvisionError, match="--split all scores every image already"):
        api.evaluate(run_dir / "model", photos, split="all", include_new=True)


def _unfinished(run_dir: Path) -> Path:
    """The run folder as an interrupted run leaves it: no metrics.json yet."""
    (run_dir / "metrics.json").unlink()
    return run_dir


def test_resume_refuses_when_a_recorded_file_changed(single_folder_run, tmp_path):
    data, run = single_folder_run
    photos, run_dir = _copy_run(run, data, tmp_path)
    train = sorted(r["path"] for r in _rows(run_dir) if r["split"] == "train")
    (photos / train[0]).unlink()
    with pytest.raises(SmallvisionError) as e:
        api.train(resume=_unfinished(run_dir), progress=False, report=False)
    assert f"1 recorded file(s) missing ({train[0]})" in str(e.value) and "put those files back" in str(e.value)
    (run_dir / "split.csv").write_text("path,split\nx.png,train\n")  # not a record smallvision wrote: named
    with pytest.raises(SmallvisionError, match=r"split.csv: not a split record smallvision wrote"):
        api.train(resume=run_dir, progress=False, report=False)
    (run_dir / "split.csv").unlink()  # a run started before splits were recorded cannot continue on its split
    with pytest.raises(SmallvisionError, match=r"no split.csv there .*--out NEW_FOLDER"):
        api.train(resume=run_dir, progress=False, report=False)


@pytest.mark.slow  # trains the resumed run again (~10 s here)
def test_resume_keeps_the_recorded_split_and_leaves_new_photos_out(single_folder_run, tmp_path):
    data, run = single_folder_run
    photos, run_dir = _copy_run(run, data, tmp_path)
    before = (run_dir / "split.csv").read_text()
    make_class_folder(photos, 3, seed=13)
    resumed = api.train(resume=_unfinished(run_dir), progress=False, report=False)
    assert (run_dir / "split.csv").read_text() == before and "_13_" not in before
    assert {s: resumed.metrics[s]["n"] for s in ("val", "test")} == {s: run.metrics[s]["n"] for s in ("val", "test")}
    assert "9 file(s) new since training" in (run_dir / "run.log").read_text()
