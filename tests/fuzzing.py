"""Fuzz targets shared by tests/test_fuzz.py (bounded) and benchmarks/fuzz.py (long): the only allowed outcomes
are a result or smallvision's own error type."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from smallvision.config import build_config, load_config
from smallvision.data.decode import decode_bytes
from smallvision.errors import SmallvisionError
from smallvision.models.folder import CARD_FILE, read_card


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB"), ("TIFF", "L")):
        im = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw) -> bytes:
    """A real image file's bytes with random flips, cuts and insertions."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


def decode_target(data: bytes) -> None:
    """Decode must give a (16, 16, 3) uint8 array or ImageDecodeError."""
    try:
        arr = decode_bytes(data, 16, "fuzz.img")
    except SmallvisionError:
        return
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
SECTION_KEYS = st.sampled_from(["data", "model", "recipe", "trainer", "seed", "out", "augment", "zzz"])
FIELD_KEYS = st.sampled_from(
    [
        "path",
        "image_size",
        "backbone",
        "dropout",
        "epochs",
        "lr",
        "name",
        "augment",
        "preset",
        "rotation_range",
        "devices",
        "weights",
        "pool",
        "unknown",
    ]
)
CONFIGS = st.dictionaries(SECTION_KEYS, JSONISH | st.dictionaries(FIELD_KEYS, JSONISH, max_size=4), max_size=5)


def config_target(text: str) -> None:
    """Reading YAML text and validating it must give a RunConfig or SmallvisionError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if _encodable(text) else path.write_bytes(
            text.encode("utf-8", "replace")
        )
        try:
            build_config(load_config(path), str(path))
        except SmallvisionError:
            return


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


VALID_CARD = {
    "classes": ["a", "b"],
    "image_size": 32,
    "resize": "shorter-side-bicubic-center-crop",
    "backbones": [
        {"name": "small_cnn", "pool": "none", "mean": [0, 0, 0], "std": [1, 1, 1], "options": {"image_size": 32}}
    ],
    "head": {"in_features": 512, "hidden": 0, "dropout": 0.0},
    "recipe": "scratch",
}
CARDS = st.one_of(
    JSONISH,
    st.fixed_dictionaries({}, optional={k: JSONISH for k in [*VALID_CARD, "format_version", "extra"]}),
    st.builds(lambda k, v: {**VALID_CARD, k: v}, st.sampled_from([*VALID_CARD, "format_version"]), JSONISH),
)


def card_target(raw: bytes) -> None:
    """Reading a model card must give a ModelCard or SmallvisionError."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / CARD_FILE).write_bytes(raw)
        try:
            read_card(tmp)
        except SmallvisionError:
            return


def card_bytes(obj) -> bytes:
    """JSON bytes of a fuzzed card."""
    return json.dumps(obj, allow_nan=True).encode()
