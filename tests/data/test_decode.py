"""Decoding: every image mode becomes RGB, EXIF rotation applies, bad files raise ImageDecodeError with a reason."""

from __future__ import annotations

import io

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
