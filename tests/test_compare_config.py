"""`compare` reuses a finished run only when it ran with the same resolved settings."""

from __future__ import annotations

import pytest

from smallvision import api
from smallvision.errors import SmallvisionError
from tests.imagegen import make_class_folder


def test_compare_refuses_runs_left_by_other_settings(tmp_path, caplog):
    data = make_class_folder(tmp_path / "data", 6, classes=("circle", "square"), seed=5)
    kw = {"recipes": "features", "out": tmp_path / "cmp", "image_size": 32, "progress": False}
    first = api.compare(data, epochs=2, **kw)
    run = tmp_path / "cmp" / "runs" / "features"
    assert api.read_metrics(run)["best_epoch"] <= 2 and len(first["rows"]) == 1
    with pytest.raises(SmallvisionError) as err:
        api.compare(data, epochs=3, **kw)
    msg = str(err.value)
    assert "finished run of features" in msg and "recipe.epochs 2 there, 3 now" in msg and "another --out" in msg
    with pytest.raises(SmallvisionError, match=r"data.image_size 32 there, 48 now"):
        api.compare(data, epochs=2, **{**kw, "image_size": 48})
    (run / "metrics.json").unlink()  # an interrupted run with other settings is not resumed either
    with pytest.raises(SmallvisionError, match=r"unfinished run of features.*would resume it"):
        api.compare(data, epochs=3, **kw)
    with caplog.at_level("INFO", logger="smallvision.comparison"):
        assert api.compare(data, epochs=2, **kw)["rows"][0]["run"] == "features"  # same settings: resumed
        api.compare(data, epochs=2, **kw)  # and now reused
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run 1/1")]
    assert lines == [
        "run 1/1: resuming features — time left known after the first run",
        "run 1/1: features finished before; skipping it",
    ]


def test_compare_refuses_an_option_one_recipe_cannot_apply_before_anything_trains(tmp_path):
    data = make_class_folder(tmp_path / "data", 6, classes=("circle", "square"), seed=5)
    out = tmp_path / "cmp"
    with pytest.raises(SmallvisionError, match=r"does not apply to recipe features"):
        api.compare(data, recipes="scratch,features", sweep=["batch_norm=true"], out=out, image_size=32, epochs=1)
    assert not (out / "runs").exists()  # scratch was not trained first only to fail on features


def test_compare_refuses_a_swept_split_option_that_its_one_recorded_split_would_ignore(tmp_path):
    data = make_class_folder(tmp_path / "data", 6, classes=("circle", "square"), seed=5)
    out = tmp_path / "cmp"
    with pytest.raises(SmallvisionError, match=r"--sweep val_fraction: every run of a compare trains on the split"):
        api.compare(data, recipes="features", sweep=["val_fraction=0.2,0.4"], out=out, image_size=32, epochs=1)
    assert not (out / "runs").exists()


@pytest.mark.slow  # three features runs and two compare pages (~80 s on this shared 2-core machine)
def test_compare_runs_share_one_recorded_split_when_the_folder_changes(tmp_path):
    """Photos added between two compares with one --out: the later run trains on the first run's split, and the
    chosen run is tested on that split, new photos left out."""
    data = make_class_folder(tmp_path / "data", 8, classes=("circle", "square"), seed=5)
    kw = {"recipes": "features", "out": tmp_path / "cmp", "image_size": 32, "test_fraction": 0.25, "progress": False}
    api.compare(data, sweep={"epochs": [2]}, **kw)
    record = (tmp_path / "cmp" / "split.csv").read_text()
    make_class_folder(data, 3, classes=("circle", "square"), seed=6)
    second = api.compare(data, sweep={"epochs": [2, 3]}, **kw)
    runs = tmp_path / "cmp" / "runs"
    assert (runs / "features_epochs=2" / "split.csv").read_text() == record
    assert (runs / "features_epochs=3" / "split.csv").read_text() == record and "_6_" not in record
    assert second["best_test"]["n"] == sum(line.split(",")[2] == "test" for line in record.splitlines()[1:])


def test_compare_refuses_an_option_given_for_every_run_and_swept_too(tmp_path):
    with pytest.raises(SmallvisionError, match=r"lr: given for every run and swept too"):
        api.compare(tmp_path, recipes="features", sweep=["lr=1e-3,1e-2"], out=tmp_path / "c", **{"recipe.lr": 0.1})
