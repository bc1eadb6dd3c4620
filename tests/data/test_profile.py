"""The data profile: counts, native sizes from headers, colour, read cheaply from real and generated folders."""

from __future__ import annotations

import json
import time

import numpy as np
from PIL import Image

from smallvision.data.profile import profile_data
from smallvision.data.scan import scan
from tests.conftest import shared_dataset


def _tiny_gray_folder(root, per_class: int = 12) -> None:
    """Three classes of 16x16 grayscale PNGs (one saved as RGB with equal channels), plus one unreadable file."""
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        d = root / c
        d.mkdir(parents=True)
        for i in range(per_class):
            im = Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8))
            (im.convert("RGB") if i == 0 else im).save(d / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png")


def test_tiny_grayscale_folder(tmp_path):
    _tiny_gray_folder(tmp_path / "data")
    index = scan(tmp_path / "data")
    profile = profile_data(index)
    assert profile.tiny and profile.grayscale == 1.0
    assert (profile.width, profile.height) == (16, 16) and profile.short_side == {"p10": 16, "p50": 16, "p90": 16}
    assert profile.classes == 3 and profile.images == len(index.items) == 37
    assert profile.sampled == 36  # the unreadable file is skipped, not counted
    assert sum(profile.per_split.values()) == 37 and profile.train_per_class["a"] == index.counts()["train"]["a"]
    assert profile.sentence() == "37 images in 3 classes (balanced), 16x16 px, grayscale"
    assert json.loads(json.dumps(profile.to_dict()))["tiny"] is True


def test_hymenoptera_is_colour_photos():
    index = scan(shared_dataset("hymenoptera"))
    start = time.perf_counter()
    profile = profile_data(index)
    assert time.perf_counter() - start < 5  # headers only; ~0.1 s measured
    assert not profile.tiny and profile.grayscale == 0.0
    assert (profile.width, profile.height) == (500, 375)
    assert profile.short_side["p10"] < profile.short_side["p50"] <= profile.short_side["p90"]
    assert profile.per_split == {"train": 245, "val": 153} and profile.train_per_class == {"ants": 124, "bees": 121}
    assert 1.0 < profile.imbalance < 1.05
    assert profile.sentence().startswith("398 images in 2 classes (balanced), 500x375 px")
    assert profile.sentence().endswith(", colour")


def test_sample_is_seeded_and_bounded(tmp_path):
    _tiny_gray_folder(tmp_path / "data", per_class=30)
    index = scan(tmp_path / "data")
    assert profile_data(index, seed=3, sample=20) == profile_data(index, seed=3, sample=20)
    assert profile_data(index, sample=20).sampled == 20
