"""Augmentation: presets and Keras parameters map onto v2 transforms; evaluation is never augmented."""

from __future__ import annotations

import pytest
import torch

from smallvision.config import AugmentConfig
from smallvision.data.transforms import eval_transform, train_transform


def _img() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)


def test_eval_transform_only_rescales():
    x = _img()
    assert torch.allclose(eval_transform()(x), x.float() / 255, atol=1e-6)


@pytest.mark.parametrize("fill", ["constant", "nearest", "reflect", "wrap"])
def test_keras_parameters_and_fill_modes(fill):
    cfg = AugmentConfig(
        preset="none",
        rotation_range=30,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=10,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode=fill,
    )
    tf = train_transform(cfg, 32)
    y = tf(_img())
    assert y.shape == (3, 32, 32) and y.dtype == torch.float32 and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, eval_transform()(_img()))


def test_none_preset_without_parameters_is_identity():
    cfg = AugmentConfig(preset="none")
    assert torch.allclose(train_transform(cfg, 32)(_img()), eval_transform()(_img()))


def test_nearest_fill_leaves_no_black_border():
    x = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    cfg = AugmentConfig(preset="none", rotation_range=45, fill_mode="nearest")
    assert train_transform(cfg, 32)(x).min() > 0.7
    black = train_transform(AugmentConfig(preset="none", rotation_range=45, fill_mode="constant"), 32)
    assert black(x).min() == 0.0
