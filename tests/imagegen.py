"""Small generated image folders for unit tests: classes that a real model can tell apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def shape_image(kind: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A coloured shape on a noisy background; the shape (not the colour) is the class."""
    bg = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    im = Image.fromarray(bg)
    draw = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
    r = int(rng.integers(size // 4, size // 2 - 2))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return im


def make_class_folder(root: Path, per_class: int, classes=SHAPES, seed: int = 0, ext: str = ".png") -> Path:
    """Write `per_class` images per class under root/<class>/."""
    rng = np.random.default_rng(seed)
    for kind in classes:
        d = root / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, rng).save(d / f"{kind}_{seed}_{i:03d}{ext}")
    return root


def make_split_dataset(root: Path, train: int = 20, val: int = 8, test: int = 0, classes=SHAPES) -> Path:
    """A train/ val/ (test/) layout of generated shapes."""
    make_class_folder(root / "train", train, classes, seed=1)
    make_class_folder(root / "val", val, classes, seed=2)
    if test:
        make_class_folder(root / "test", test, classes, seed=3)
    return root
