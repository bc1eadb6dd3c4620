"""`evaluate` scores the run's held-out split, and never its training images unless asked."""

from __future__ import annotations

import shutil

import pytest

from smallvision import api
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
    assert m["split"] == "test" and m["n"] == run.metrics["test"]["n"] == 6
    assert "the run's own test split" in m["split_reason"] and "config.yaml" in m["split_reason"]
    val = api.evaluate(run.model_dir, data, split="val")
    assert val["n"] == run.metrics["val"]["n"]


def test_evaluate_refuses_training_images_unless_asked(single_folder_run, tmp_path):
    data, run = single_folder_run
    moved = shutil.copytree(run.model_dir, tmp_path / "model")  # no run folder around it: nothing says the split
    with pytest.raises(SmallvisionError, match=r"--config RUN/config.yaml.*--split all"):
        api.evaluate(moved, data)
    again = api.evaluate(moved, data, config=run.run_dir / "config.yaml")
    assert again["split"] == "test" and again["n"] == 6
    every = api.evaluate(moved, data, split="all")
    assert every["split"] == "all" and every["n"] == 30 and "training images" in every["split_reason"]
    copy = shutil.copytree(data, tmp_path / "copy")  # another folder holding the training images is refused
    with pytest.raises(SmallvisionError, match=r"trained this model.*--split all"):
        api.evaluate(run.model_dir, copy)
    new = make_class_folder(tmp_path / "new", 2, seed=9)  # unseen images are scored whole
    fresh = api.evaluate(run.model_dir, new)
    assert fresh["split"] == "all" and fresh["n"] == 6 and "none is in the training split" in fresh["split_reason"]
    gone = shutil.copytree(run.run_dir, tmp_path / "gone")  # the run's data folder moved away: nothing to compare
    config = gone / "config.yaml"
    config.write_text(config.read_text().replace(str(data), str(tmp_path / "moved")))
    with pytest.raises(SmallvisionError, match=r"which is not there to compare with.*--split all"):
        api.evaluate(gone / "model", new)
