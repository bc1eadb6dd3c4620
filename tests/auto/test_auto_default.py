"""The default `auto` (no --backbone, no --image-size) end to end on a tiny folder, its budget against the clock,
and the numbers it reports for an averaged, flipped model against what `evaluate` gets from the saved model."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

import smallvision
from smallvision.auto import select
from smallvision.auto.plan import PLAN_FILE
from tests.imagegen import SHAPES, shape_image


@pytest.fixture(scope="module")
def photos96(tmp_path_factory) -> Path:
    """Three shape classes at 96 px: above auto's 'tiny' line, so the default plan is the pretrained one."""
    root = tmp_path_factory.mktemp("photos96")
    rng = np.random.default_rng(3)
    for kind in SHAPES:
        (root / kind).mkdir()
        for i in range(8):
            shape_image(kind, rng, 96).save(root / kind / f"{kind}{i}.png")
    return root


def test_an_averaged_flipped_default_model_reports_what_evaluate_gets(photos96, tmp_path, monkeypatch):
    """Default auto; its selection is steered to keep an average of every candidate and the flips (each later
    comparison on validation wins), so the saved model is the ensemble with TTA whose numbers are checked."""
    wins = itertools.count()

    def later_wins(probs: np.ndarray, labels: np.ndarray, task) -> float:
        return task.score(probs, labels) + next(wins)

    monkeypatch.setattr(select, "score", later_wins)  # every choice reads it here
    r = smallvision.train(
        photos96, out=tmp_path / "run", test_fraction=0.25, finetune_epochs=1, progress=False, report=False
    )
    plan = (r.run_dir / "checkpoints" / PLAN_FILE).read_text()
    assert '"size": 260' in plan and "efficientnet_lite2" in plan  # auto's own size and backbones, none given
    card = smallvision.load(r.model_dir)[1]
    assert card.tta == "hflip" and len(card.backbones) > 1 and card.image_size == 260
    for split in ("val", "test"):
        got = smallvision.evaluate(r.model_dir, photos96, split=split)
        assert got["split"] == split
        assert got["accuracy"] == pytest.approx(r.metrics[split]["accuracy"], abs=1e-12)
        assert got["loss"] == pytest.approx(r.metrics[split]["loss"], abs=1e-4)
        assert got["confusion_matrix"] == r.metrics[split]["confusion_matrix"]


def test_the_budget_holds_by_the_clock(shapes_data, tmp_path):
    """A budget that leaves room only for sampled features: the whole call, scan to saved model, fits inside it."""
    budget = 40.0
    start = time.perf_counter()
    r = smallvision.train(shapes_data, out=tmp_path / "b", time_budget=budget, progress=False, report=False)
    wall = time.perf_counter() - start
    assert wall <= budget and r.metrics["seconds"] <= wall
    assert not list((r.run_dir / "checkpoints").glob("finetune*"))  # no fine-tuning in this plan
    assert any("too small for fine-tuning" in n for n in r.notes)
