"""The ImageNet-distance probe on real data: drawn digits favour a from-scratch CNN, insect photos the features."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from smallvision.auto.probe import imagenet_distance, ncm_accuracy
from smallvision.data.scan import scan
from tests.conftest import shared_dataset

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """The demo's data: scikit-learn's 1,797 8x8 digits written as 32x32 PNGs by the demo's own writer."""
    spec = importlib.util.spec_from_file_location("smallvision_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo.write_digits(tmp_path_factory.mktemp("digits") / "digits")


def test_digits_are_far_from_imagenet(digits):
    result = imagenet_distance(scan(digits), scratch_size=32, train_per_class=20, val_per_class=10)
    assert (result.train_images, result.val_images) == (200, 100)
    assert (
        result.scratch_accuracy > result.ncm_accuracy + 0.15
    )  # measured 0.92 vs 0.65 (600-image sample: 0.95 vs 0.66)
    assert "far from ImageNet photos" in result.sentence()
    assert json.loads(json.dumps(result.to_dict()))["backbone"] == "efficientnet_lite0"


def test_hymenoptera_is_close_to_imagenet():
    index = scan(shared_dataset("hymenoptera"))
    result = imagenet_distance(index, scratch_size=64)
    assert (result.train_images, result.val_images) == (120, 40)  # 60 and 20 per class; test is never touched
    assert result.ncm_accuracy > 0.85
    assert result.ncm_accuracy > result.scratch_accuracy + 0.1  # measured 0.925 vs 0.70
    assert "close to ImageNet photos" in result.sentence()
    again = imagenet_distance(index, scratch_size=64)
    assert {**again.to_dict(), "seconds": 0} == {**result.to_dict(), "seconds": 0}


def test_ncm_is_cosine_nearest_class_mean():
    import numpy as np

    train = (np.array([[1.0, 0.0], [3.0, 0.1], [0.0, 2.0], [0.1, 5.0]]), np.array([0, 0, 1, 1]))
    val = (np.array([[10.0, 1.0], [0.2, 0.1], [0.0, 0.3]]), np.array([0, 1, 1]))
    assert ncm_accuracy(train, val) == pytest.approx(2 / 3)
