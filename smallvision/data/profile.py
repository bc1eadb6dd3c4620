"""What a folder holds before any training: counts, balance, native image sizes, colour or grayscale, all cheap.

Sizes come from image headers alone (PIL reads them without decoding) on a seeded sample; grayscale from a few
sampled files decoded small (JPEG `draft` decodes at 1/8 scale). `auto` plans from this profile.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from smallvision.data.index import SPLITS, DatasetIndex
from smallvision.recipe_specs import MIN_SCRATCH_SIZE

log = logging.getLogger(__name__)

TINY_SIDE = 64  # a median short side at or below this is "tiny": pretrained backbones see mostly upscaling blur
GRAY_SAMPLE = 48  # files decoded (small) to judge colour
GRAY_TOLERANCE = 8  # max |R-G|, |G-B| (of 255) over a whole image for it to count as grayscale (JPEG chroma noise)
GRAY_SIDE = 64  # files are decoded at about this size to judge colour


@dataclass
class DataProfile:
    """A dataset at a glance: what the planner needs to choose candidates, and one sentence for the user."""

    images: int
    classes: int
    per_split: dict[str, int]
    train_per_class: dict[str, int]
    imbalance: float
    width: int
    height: int
    short_side: dict[str, int]
    grayscale: float
    sampled: int

    @property
    def tiny(self) -> bool:
        """Whether the median image is small enough (short side <= 64 px) that upscaling for a backbone adds little."""
        return self.short_side.get("p50", 0) <= TINY_SIDE

    def native_size(self, cap: int) -> int | None:
        """The size a from-scratch CNN trains at: the median short side, at most `cap` and at least
        MIN_SCRATCH_SIZE; None when no image header could be read."""
        side = self.short_side.get("p50", 0)
        return max(MIN_SCRATCH_SIZE, min(cap, side)) if side > 0 else None

    def to_dict(self) -> dict:
        """JSON-able form, recorded in the run's plan."""
        return {**asdict(self), "tiny": self.tiny}

    def sentence(self) -> str:
        """One sentence for the log and report."""
        balance = "balanced" if self.imbalance <= 1.5 else f"imbalanced {self.imbalance:.1f}:1"
        colour = "grayscale" if self.grayscale >= 0.9 else "colour" if self.grayscale <= 0.1 else "mixed colour"
        size = f"{self.width}x{self.height} px" if self.sampled else "sizes unknown"
        spread = self.short_side.get("p90", 0) > 2 * max(1, self.short_side.get("p10", 0))
        if spread:
            size += f" (short side {self.short_side['p10']}-{self.short_side['p90']} px)"
        classes = f"{self.classes} class{'es' if self.classes != 1 else ''}"
        return f"{self.images:,} images in {classes} ({balance}), {size}, {colour}"


def _sample(index: DatasetIndex, seed: int, n: int) -> list:
    """A seeded uniform sample of at most `n` items (the same index and seed: the same files)."""
    rng = np.random.default_rng(seed)
    items = index.items
    if len(items) <= n:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False).tolist())]


def _is_gray(path) -> bool | None:
    """Whether a file's decoded pixels have R, G and B (nearly) equal everywhere; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return True
            im.draft("RGB", (GRAY_SIDE, GRAY_SIDE))  # JPEG: decode at a fraction of the size; others ignore it
            if im.mode == "P":
                im = im.convert("RGBA")
            im.thumbnail((GRAY_SIDE, GRAY_SIDE))
            rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    except Exception as e:  # any unreadable file is skipped; the scan and decode cache report it
        log.debug("profile: %s unreadable (%s)", path, e)
        return None
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() <= GRAY_TOLERANCE) and bool(
        np.abs(rgb[..., 1] - rgb[..., 2]).max() <= GRAY_TOLERANCE
    )


def _size(path) -> tuple[int, int] | None:
    """A file's (width, height) from its header, or None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # unreadable files are the scan's and the decode cache's to report
        log.debug("profile: %s unreadable (%s)", path, e)
        return None


def profile_data(index: DatasetIndex, seed: int = 0, sample: int = 400) -> DataProfile:
    """Profile a scanned dataset: counts from the index, sizes from `sample` files' headers, colour from a few."""
    per_split = {s: n for s in SPLITS if (n := sum(1 for it in index.items if it.split == s))}
    counts = Counter(j for it in index.items if it.split == "train" for j in it.label_set)
    train_per_class = {name: counts.get(i, 0) for i, name in enumerate(index.classes)}
    present = [n for n in train_per_class.values() if n]
    imbalance = max(present) / min(present) if present else 1.0
    chosen = _sample(index, seed, sample)
    sizes = [s for it in chosen if (s := _size(it.path)) is not None]
    grays = [
        g for it in chosen[:: max(1, len(chosen) // GRAY_SAMPLE)][:GRAY_SAMPLE] if (g := _is_gray(it.path)) is not None
    ]
    if sizes:
        wh = np.array(sizes)
        width, height = (int(v) for v in np.median(wh, axis=0))
        short = wh.min(axis=1)
        short_side = {f"p{q}": int(np.percentile(short, q)) for q in (10, 50, 90)}
    else:
        width = height = 0
        short_side = {"p10": 0, "p50": 0, "p90": 0}
    return DataProfile(
        images=len(index.items),
        classes=len(index.classes),
        per_split=per_split,
        train_per_class=train_per_class,
        imbalance=round(float(imbalance), 3),
        width=width,
        height=height,
        short_side=short_side,
        grayscale=round(sum(grays) / len(grays), 3) if grays else 0.0,
        sampled=len(sizes),
    )
