"""A run's config.yaml round-trips: rerun from anywhere gives the same model, flags override it, resume works."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import smallvision
from smallvision.config import load_config
from smallvision.errors import SmallvisionError
from tests.imagegen import make_split_dataset

TINY = {"recipe": "features", "image_size": 32, "epochs": 3, "seed": 2, "progress": False, "report": False}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture
def relative_run(shapes_data, tmp_path, monkeypatch) -> Path:
    """A features run started from the data's parent folder with a relative data path and a relative --out."""
    monkeypatch.chdir(shapes_data.parent)
    out = tmp_path / "a"
    r = smallvision.train(shapes_data.name, out=os.path.relpath(out, shapes_data.parent), **TINY)
    assert r.run_dir.resolve() == out.resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return out


def test_config_yaml_stores_what_was_set_with_absolute_paths_and_shows_the_resolved_values(relative_run):
    raw = yaml.safe_load((relative_run / "config.yaml").read_text())
    assert Path(raw["data"]["path"]).is_absolute() and Path(raw["data"]["path"]).is_dir()
    assert Path(raw["out"]) == relative_run.resolve()
    assert "backbone" not in raw.get("model", {})  # a default, not set: resolved again at load
    assert raw["recipe"] == {"name": "features", "epochs": 3}
    assert raw["resolved"]["model"]["backbone"] == "efficientnet_lite0"
    assert raw["resolved"]["recipe"]["lr"] == 1e-3
    assert "resolved" not in load_config(relative_run / "config.yaml")


def test_saved_config_rerun_from_another_folder_gives_the_same_model(relative_run, tmp_path):
    b = smallvision.train(config=relative_run / "config.yaml", out=tmp_path / "b", progress=False, report=False)
    ours, theirs = _weights(b.run_dir), _weights(relative_run)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert yaml.safe_load((b.run_dir / "config.yaml").read_text())["out"] == str(tmp_path / "b")


def test_a_flag_overrides_the_saved_config_even_the_recipe(relative_run, tmp_path):
    r = smallvision.train(
        config=relative_run / "config.yaml", recipe="scratch", epochs=1, out=tmp_path / "s", progress=False
    )
    _, card = smallvision.load(r.model_dir)
    assert card.recipe == "scratch" and card.backbones[0].name == "small_cnn"
    saved = Path(load_config(relative_run / "config.yaml")["data"]["path"])
    assert Path(r.metrics["data"]["root"]).resolve() == saved.resolve()


def test_resume_from_another_folder(relative_run):
    for name in ("metrics.json", "history.csv", "report.html"):
        (relative_run / name).unlink(missing_ok=True)
    shutil.rmtree(relative_run / "model")  # an unfinished run: its config.yaml is there, its results are not
    r = smallvision.train(resume=relative_run, progress=False, report=False)
    assert r.run_dir.resolve() == relative_run.resolve()
    assert (relative_run / "metrics.json").is_file()


def test_resume_refuses_options_it_could_not_apply(relative_run):
    # finished stages, checkpoints and auto's plan keep the old values: a changed option would be recorded, not run
    before = (relative_run / "config.yaml").read_text()
    with pytest.raises(SmallvisionError, match=r"cannot change epochs, lr\. To train with other settings"):
        smallvision.train(resume=relative_run, epochs=9, lr=0.5, progress=False, report=False)
    assert (relative_run / "config.yaml").read_text() == before


def _leaky(root: Path) -> Path:
    data = make_split_dataset(root, train=4, val=2)
    first = sorted((data / "train" / "circle").iterdir())[0]
    (data / "val" / "circle" / "copy.png").write_bytes(first.read_bytes())
    return data


@pytest.mark.parametrize("case", ["empty folder", "leak with --strict"])
def test_a_start_that_fails_on_its_data_leaves_no_unfinished_run(tmp_path, case):
    if case == "empty folder":
        data, options, error = tmp_path / "empty", {}, "no|found 0|empty"
        data.mkdir()
    else:
        data, options, error = _leaky(tmp_path / "data"), {"strict": True}, "appear in more than one split"
    out = tmp_path / "run"
    for _ in range(2):  # the second try meets the same data problem, not "holds an unfinished run; --resume it"
        with pytest.raises(SmallvisionError, match=error) as e:
            smallvision.train(data, out=out, progress=False, **options)
        assert "unfinished run" not in str(e.value)
        assert not (out / "config.yaml").exists()


@pytest.mark.parametrize(
    ("options", "flags"),
    [({"val_fraction": 0.3}, "--val-fraction"), ({"test_fraction": 0.2, "min_test_per_class": 2}, "--test-fraction")],
)
def test_split_options_a_folder_with_split_folders_leaves_unused_are_refused(tmp_path, options, flags):
    data = make_split_dataset(tmp_path / "data", train=4, val=2)  # train/ + val/: nothing is carved
    with pytest.raises(SmallvisionError, match=rf"{flags}.*carves no split that would use it"):
        smallvision.train(data, recipe="features", image_size=32, out=tmp_path / "run", progress=False, **options)
    assert not (tmp_path / "run" / "config.yaml").exists()
