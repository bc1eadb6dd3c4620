"""What a run reports is what ran: the device label, and the numbers of the model it saved."""

from __future__ import annotations

import pytest

from smallvision import api
from smallvision.errors import SmallvisionError


@pytest.fixture(scope="module")
def features_devices2(shapes_data, tmp_path_factory):
    """A features run given --devices 2 (the features path trains its head in this one process)."""
    out = tmp_path_factory.mktemp("reported") / "run"
    try:
        api.train(
            shapes_data, recipe="features", image_size=64, epochs=5, devices=2, out=out, report=False, progress=False
        )
    except SmallvisionError as e:  # refusing the option is honest too, if the message names it and the recipe
        assert "devices" in str(e) and "features" in str(e), e
        return None
    return out


def test_device_label_says_ddp_only_when_ddp_ran(features_devices2):
    if features_devices2 is None:
        return
    metrics = api.read_metrics(features_devices2)
    assert metrics["device"] in ("cpu", "cuda") and "DDP" not in metrics["device"]
    assert metrics["world_size"] == 1


def test_reported_metrics_are_the_saved_models(shapes_data, tmp_path):
    run = api.train(shapes_data, recipe="features", image_size=64, epochs=5, out=tmp_path / "run", report=False)
    for split in ("val", "test"):
        saved = api.evaluate(run.model_dir, shapes_data, split=split)
        reported = run.metrics[split]
        assert saved["n"] == reported["n"]
        assert saved["accuracy"] == reported["accuracy"]
        assert saved["loss"] == pytest.approx(reported["loss"], rel=1e-5, abs=1e-6), split
