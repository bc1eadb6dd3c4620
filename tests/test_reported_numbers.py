"""What a run reports is what ran: the device label, and the numbers of the model it saved."""

from __future__ import annotations

import pytest

from smallvision import api
from smallvision.errors import SmallvisionError


def test_device_label_says_ddp_only_when_ddp_ran(shapes_data, tmp_path):
    # The features path trains its head in this one process: --devices 2 is refused there, not recorded as DDP.
    with pytest.raises(SmallvisionError, match=r"devices.*features|features.*devices"):
        api.train(shapes_data, recipe="features", image_size=64, devices=2, out=tmp_path / "d2", progress=False)
    run = api.train(shapes_data, recipe="features", image_size=64, epochs=2, out=tmp_path / "d1", report=False)
    metrics = api.read_metrics(run.run_dir)
    assert metrics["device"] in ("cpu", "cuda") and "DDP" not in metrics["device"]
    assert metrics["world_size"] == 1


@pytest.mark.parametrize("recipe", ["features", "finetune"])
def test_reported_metrics_are_the_saved_models(shapes_data, tmp_path, recipe):
    # finetune reports from its activation cache: its held-out activations are fp32, as the saved model runs.
    run = api.train(
        shapes_data,
        recipe=recipe,
        backbone="efficientnet_lite0",
        image_size=64,
        epochs=5,
        **({"finetune_epochs": 2} if recipe == "finetune" else {}),
        out=tmp_path / "run",
        report=False,
        progress=False,
    )
    for split in ("val", "test"):
        saved = api.evaluate(run.model_dir, shapes_data, split=split)
        reported = run.metrics[split]
        assert saved["n"] == reported["n"]
        assert saved["accuracy"] == reported["accuracy"]
        assert saved["loss"] == pytest.approx(reported["loss"], rel=1e-5, abs=1e-6), split
