"""Augmentation presets and Keras ImageDataGenerator parameters, mapped onto torchvision.transforms.v2.

Transforms take uint8 CHW tensors (from the image cache) and return float [0, 1] CHW tensors.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from smallvision.config import AugmentConfig

# Keras fill modes -> v2.Pad padding modes (the image is padded, transformed, then centre-cropped back).
PAD_MODES = {"nearest": "edge", "reflect": "reflect"}


class _WrapPad(torch.nn.Module):
    """Circular padding: Keras' fill_mode='wrap'."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the last two dimensions by wrapping around."""
        return torch.nn.functional.pad(x[None].float(), [self.pad] * 4, mode="circular")[0].to(x.dtype)


def _keras_affine(cfg: AugmentConfig, size: int) -> list:
    """Rotation, shifts, shear and zoom as one RandomAffine, with Keras' fill behaviour at the borders.

    Shift ranges are fractions of the original width and height, as in Keras: RandomAffine takes its fraction of
    the image it is given, so on a padded image the fraction is scaled down by size / padded size.
    """
    if not any((cfg.rotation_range, cfg.width_shift_range, cfg.height_shift_range, cfg.shear_range, cfg.zoom_range)):
        return []
    pad = 0 if cfg.fill_mode == "constant" else size // 2
    of_padded = size / (size + 2 * pad)
    affine = v2.RandomAffine(
        degrees=cfg.rotation_range,
        translate=(cfg.width_shift_range * of_padded, cfg.height_shift_range * of_padded)
        if cfg.width_shift_range or cfg.height_shift_range
        else None,
        scale=(1 - cfg.zoom_range, 1 + cfg.zoom_range) if cfg.zoom_range else None,
        shear=cfg.shear_range or None,
        interpolation=v2.InterpolationMode.BILINEAR,
    )
    if not pad:
        return [affine]
    padder = _WrapPad(pad) if cfg.fill_mode == "wrap" else v2.Pad(pad, padding_mode=PAD_MODES[cfg.fill_mode])
    return [padder, affine, v2.CenterCrop(size)]


def train_transform(cfg: AugmentConfig, size: int) -> v2.Compose:
    """Training transform: the preset, then any explicit Keras-style parameters."""
    steps: list = []
    if cfg.preset == "light":
        steps.append(v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True))
    elif cfg.preset == "standard":
        steps += [
            v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True),
            v2.RandomRotation(10),
            v2.ColorJitter(0.2, 0.2, 0.2),
        ]
    steps += _keras_affine(cfg, size)
    flip = cfg.horizontal_flip if cfg.horizontal_flip is not None else cfg.preset != "none"
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.vertical_flip:
        steps.append(v2.RandomVerticalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def eval_transform() -> v2.Compose:
    """Evaluation transform: no augmentation, just scaling to [0, 1] (images are already sized by the cache)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
