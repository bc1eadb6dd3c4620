"""Decoding: every image mode becomes RGB, EXIF rotation applies, bad files raise ImageDecodeError with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smallvision.data.decode import ImageDecodeError, decode_bytes, decode_file


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_jpeg_is_resized_to_square():
    im = Image.new("RGB", (300, 200), (200, 30, 30))
    arr = decode_bytes(_bytes(im, "JPEG"), 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert arr[..., 0].mean() > 180 and arr[..., 2].mean() < 60


@pytest.mark.parametrize(
    "mode,colour",
    [("L", 128), ("P", 5), ("RGBA", (10, 200, 10, 255)), ("CMYK", (0, 255, 255, 0)), ("LA", (90, 255))],
)
def test_modes_become_rgb(mode, colour):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    arr = decode_bytes(_bytes(Image.new(mode, (20, 20), colour), fmt), 16)
    assert arr.shape == (16, 16, 3)


def test_cmyk_red_stays_red():
    arr = decode_bytes(_bytes(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"), 16)
    assert arr[..., 0].mean() > 200 and arr[..., 1].mean() < 60


def test_transparent_pixels_go_on_white():
    arr = decode_bytes(_bytes(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "PNG"), 8)
    assert arr.min() == 255


def test_sixteen_bit_png_keeps_its_range():
    data = np.full((20, 20), 40000, dtype=np.uint16)
    arr = decode_bytes(_bytes(Image.fromarray(data), "PNG"), 8)
    assert abs(int(arr.mean()) - round(40000 / 257)) <= 1


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    arr = decode_bytes(data, 8)
    assert arr[..., 0].mean() > 200 and arr[..., 2].mean() < 60


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    im.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: left half ends up on top
    arr = decode_bytes(_bytes(im, "JPEG", exif=exif, quality=95), 20)
    assert arr[:8, :, 0].mean() > 200 and arr[-8:, :, 2].mean() > 200


def test_tiny_image_is_upscaled():
    assert decode_bytes(_bytes(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), 32).shape == (32, 32, 3)


def test_very_wide_image_is_cropped_before_resize():
    arr = decode_bytes(_bytes(Image.new("RGB", (10000, 10), (9, 9, 9)), "PNG"), 32)
    assert arr.shape == (32, 32, 3)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"<html><body>not found</body></html>", "not an image"),
        (b"hello, I am text", "not an image"),
    ],
)
def test_non_images_raise_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_bytes(data, 16, "x.jpg")


def test_truncated_jpeg_raises():
    data = _bytes(Image.effect_noise((200, 200), 60).convert("RGB"), "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_bytes(data[: len(data) // 2], 16, "cut.jpg")


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        decode_bytes(_bytes(Image.new("RGB", (100, 100)), "PNG"), 16, "big.png")


def test_unreadable_path_names_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="missing.png"):
        decode_file(tmp_path / "missing.png", 16)


# Peak resident memory (VmHWM, the kernel's high-water mark of this process; ru_maxrss would carry the parent's
# across exec) grown by one decode, in a fresh process.
_PEAK = """
import re, sys
from smallvision.data.decode import decode_bytes
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
decode_bytes(open(sys.argv[2], "rb").read(), 8)  # the decoders' own first-use allocations, outside the measure
data = open(sys.argv[1], "rb").read()
before = peak()
decode_bytes(data, 224)
print(peak() - before)
"""


@pytest.mark.parametrize("kind", ["RGBA rotated by EXIF", "I;16"])
def test_decoding_a_large_png_peaks_within_the_stated_bound(kind, tmp_path):
    """A 4-megapixel PNG of a few KB (the shape of a decompression-heavy upload) peaks within the bound the manual
    and the server's limits state: DECODE_BYTES_PER_PIXEL x pixels, plus a few MB for a band and the decoder."""
    import subprocess
    import sys

    from smallvision.data.decode import DECODE_BYTES_PER_PIXEL

    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc/self/status (Linux)")

    side = 2000
    if kind == "I;16":
        im, exif = Image.new("I;16", (side, side), 40000), Image.Exif()
    else:
        im, exif = Image.new("RGBA", (side, side), (9, 200, 30, 128)), Image.Exif()
        exif[0x0112] = 6
    (tmp_path / "big.png").write_bytes(_bytes(im, "PNG", exif=exif))
    (tmp_path / "small.png").write_bytes(_bytes(im.resize((16, 16)), "PNG", exif=exif))
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(tmp_path / "big.png"), str(tmp_path / "small.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    grown = int(done.stdout)
    assert grown > 4 * side * side  # the measure sees the decode: its source alone is 4 bytes a pixel (RGBX or I;16's)
    assert grown <= DECODE_BYTES_PER_PIXEL * side * side + 4 * 2**20, (kind, grown / side**2)


def test_band_by_band_conversion_gives_the_pixels_a_whole_image_conversion_gives(monkeypatch):
    import smallvision.data.decode as decode

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (61, 83, 4), dtype=np.uint8), "RGBA"),  # partial alpha everywhere
        Image.fromarray(rng.integers(0, 65536, (61, 83), dtype=np.uint16)),
        Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8), "RGB").convert("P"),
    ]
    images[2].info["transparency"] = 7
    whole = [np.asarray(decode.to_rgb(im)) for im in images]
    monkeypatch.setattr(decode, "BAND_PIXELS", 100)  # one or two rows a band
    for im, expected in zip(images, whole, strict=True):
        assert np.array_equal(np.asarray(decode.to_rgb(im)), expected), im.mode
