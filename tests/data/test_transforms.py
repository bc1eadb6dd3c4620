"""Augmentation: presets and Keras parameters map onto v2 transforms; evaluation is never augmented."""

from __future__ import annotations

import numpy as np
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


def _dot_shifts(cfg: AugmentConfig, size: int, samples: int) -> np.ndarray:
    """How far a bright dot at the centre moved (dx, dy in pixels) in each of `samples` augmented images."""
    torch.manual_seed(0)
    x = torch.zeros((3, size, size), dtype=torch.uint8)
    c = size // 2
    x[:, c - 1 : c + 2, c - 1 : c + 2] = 255
    tf = train_transform(cfg, size)
    grid = np.arange(size, dtype=np.float64)
    out = []
    for _ in range(samples):
        y = tf(x).sum(0).numpy().astype(np.float64)
        assert y.sum() > 0, "the dot left the image: shifted far beyond the asked range"
        out.append(((y.sum(0) * grid).sum() / y.sum() - c, (y.sum(1) * grid).sum() / y.sum() - c))
    return np.array(out)


@pytest.mark.parametrize("fill", ["constant", "nearest", "reflect", "wrap"])
@pytest.mark.parametrize("axis", ["width", "height"])
def test_keras_shift_moves_a_dot_by_the_asked_fraction_of_the_original_size(fill, axis):
    size, asked = 40, 0.2  # Keras: shifts uniform in [-0.2, 0.2] x 40 = up to 8 px; twice that still fits the image
    cfg = AugmentConfig(preset="none", fill_mode=fill, **{f"{axis}_shift_range": asked})
    shifts = _dot_shifts(cfg, size, 300)
    moved, still = (shifts[:, 0], shifts[:, 1]) if axis == "width" else (shifts[:, 1], shifts[:, 0])
    assert np.abs(still).max() < 1e-6
    assert np.abs(moved).max() <= asked * size + 1e-6
    assert np.abs(moved).max() >= asked * size - 1  # the whole range is used, not a fraction of it
    assert 0.35 * asked * size < np.abs(moved).mean() < 0.65 * asked * size  # uniform: mean |shift| ~ half the range
