"""Helpers for reading run folders in tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def history_rows(run_dir: Path) -> list[dict[str, str]]:
    """history.csv rows without the `time` column (when each epoch ended differs between identical runs)."""
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


def decode_png(path: Path) -> np.ndarray:
    """A PNG as an RGB uint8 array, decoded by Pillow (what a viewer would show)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def kernel_tiles(path: Path) -> list[np.ndarray]:
    """The kernel tiles of a first-layer kernels figure: filled, roughly square non-white regions, in reading order.

    White lines separate the tiles; the title's glyphs are smaller than a tile and never filled.
    """
    from scipy import ndimage

    rgb = decode_png(path)
    ink = (rgb < 250).any(-1)
    labels, _ = ndimage.label(ink)
    tiles = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        if h >= 12 and w >= 12 and 0.7 < h / w < 1.4 and (labels[box] == i).mean() > 0.85:
            tiles.append(rgb[box])
    return tiles


def assert_figures_not_blank(run_dir: Path, kernels: int) -> list[str]:
    """Decode every figure of a run: each has several colours and no colour covers it all; the kernels figure has
    `kernels` tiles, each of several colours. Returns the figure names."""
    names = []
    for png in sorted((Path(run_dir) / "figures").glob("*.png")):
        rgb = decode_png(png)
        colours, counts = np.unique(rgb.reshape(-1, 3), axis=0, return_counts=True)
        assert len(colours) >= 16, f"{png.name}: only {len(colours)} colours"
        assert counts.max() < 0.97 * counts.sum(), f"{png.name}: one colour covers {counts.max() / counts.sum():.0%}"
        names.append(png.stem)
    tiles = kernel_tiles(Path(run_dir) / "figures" / "kernels.png")
    assert len(tiles) == kernels, f"kernels.png shows {len(tiles)} kernels, expected {kernels}"
    for tile in tiles:
        assert len(np.unique(tile.reshape(-1, 3), axis=0)) >= 3, "a single-colour kernel tile"
    return names


def first_conv_kernels(model_dir: Path) -> int:
    """How many kernels the saved network's first Conv2d (by module order) has, capped as the figure caps them."""
    import torch

    from smallvision.evaluation.plots import KERNEL_CAP
    from smallvision.models.folder import load_model

    model, _ = load_model(model_dir)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return min(first.out_channels, KERNEL_CAP)
