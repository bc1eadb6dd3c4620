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


def multilabel_image(kinds: tuple[str, ...], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Each of `kinds` drawn once in its own quadrant-free spot on a noisy background (none: background only)."""
    bg = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
    im = Image.fromarray(bg)
    draw = ImageDraw.Draw(im)
    spots = rng.permutation(4)
    for kind, spot in zip(kinds, spots, strict=False):
        colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
        r = int(rng.integers(size // 8, size // 4 - 2))
        ox, oy = (spot % 2) * size // 2, (spot // 2) * size // 2
        cx, cy = ox + size // 4, oy + size // 4
        if kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif kind == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return im


def make_multilabel_folder(root: Path, n: int = 60, seed: int = 0, onehot: bool = False, kinds=SHAPES) -> Path:
    """`n` images under root/images/, each holding a random subset of `kinds` (its labels, possibly none), listed
    in root/labels.csv as `filename,labels` (space-separated) or, with `onehot`, as a 0/1 table."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        chosen = tuple(k for k in kinds if rng.random() < 0.45)
        name = f"img_{seed}_{i:03d}.png"
        multilabel_image(chosen, rng).save(root / "images" / name)
        rows.append((name, chosen))
    if onehot:
        lines = ["filename," + ",".join(kinds)]
        lines += [name + "," + ",".join("1" if k in chosen else "0" for k in kinds) for name, chosen in rows]
    else:
        lines = ["filename,labels"] + [f"{name},{' '.join(chosen)}" for name, chosen in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root
