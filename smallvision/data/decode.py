"""Decode one image file into a square RGB uint8 array: EXIF-rotated, any mode converted, resized once."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smallvision.errors import SmallvisionError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
RESIZE_POLICY = "shorter-side-bicubic-center-crop"
# Peak memory of decode_bytes, in bytes per pixel of the image: the decoded source (at most 4 bytes a pixel: Pillow
# keeps RGB as RGBX) plus its RGB conversion (4), or the source plus its EXIF rotation; measured by
# tests/data/test_decode.py::test_decoding_a_large_png_peaks_within_the_stated_bound for each kind of PNG.
DECODE_BYTES_PER_PIXEL = 8
BAND_PIXELS = 1 << 16  # pixels to_rgb converts at a time: its working copies of a band stay near 1 MB
_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Set once, not around each decode: warnings.catch_warnings swaps the process-wide filter list (not thread-safe, says
# Python's manual), and images decode in several threads at once (data/cache.py) and while a backbone is traced in
# another (caching/features.py). Overlapping swaps restore stale lists: seen here, a cold run's torch.jit.freeze
# FutureWarning reached the terminal past the tracer's own filter (2 of 2 runs at one time, 0 of 4 later: timing),
# and a test's UserWarnings stayed ignored for the rest of its process.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # corrupt EXIF/TIFF tags: pixels may decode
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class ImageDecodeError(SmallvisionError):
    """A file that is not a usable image; the message says why.

    `transient`: the failure says nothing about the file's content (it could not be read, memory ran out), so a
    cache must not remember it: a later run tries again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self._transient = transient

    @property
    def transient(self) -> bool:
        """True when a later attempt on the same bytes may succeed (a read error, or memory running out)."""
        return self._transient or isinstance(self.__cause__, MemoryError)


def decoder_version() -> str:
    """The decoder a remembered decode failure holds for: Pillow, its codecs and its pixel limit (read at each call)."""
    import PIL
    from PIL import features

    codecs = ", ".join(f"{c} {features.version(c)}" for c in ("jpg", "zlib", "libtiff", "webp"))
    return f"Pillow {PIL.__version__} ({codecs}), limit {Image.MAX_IMAGE_PIXELS} px"


def content_digest(data: bytes) -> str:
    """Return the hex content key of a file's bytes (what every cache is keyed by)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def is_image_name(path: Path) -> bool:
    """True for visible files with an image extension (case-insensitive)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, P, RGBA, CMYK, I;16, ...) to RGB; transparency goes on white.

    The conversion runs band by band into one RGB image, so its peak memory is the source plus the result (at most
    DECODE_BYTES_PER_PIXEL together) instead of the three or four whole-image copies a one-shot conversion makes.
    """
    if im.mode == "RGB":
        return im
    peak = None
    if im.mode in _INTEGER_MODES:
        peak = 65535.0 if (im.getextrema()[1] or 0) > 255 else 255.0
    out = Image.new("RGB", im.size)
    rows = max(1, BAND_PIXELS // max(1, im.width))
    for top in range(0, im.height, rows):
        box = (0, top, im.width, min(top + rows, im.height))
        out.paste(_band_to_rgb(im.crop(box), peak), box)
    return out


def _band_to_rgb(im: Image.Image, peak: float | None) -> Image.Image:
    """One band of an image as RGB: 16-bit and float modes scaled by the whole image's `peak`, alpha on white."""
    if peak is not None:
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:  # a band keeps the palette and its transparency
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def decode_bytes(data: bytes, size: int, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes into a (size, size, 3) uint8 array; raise ImageDecodeError naming `name`."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        if im.format == "JPEG":
            im.draft(None, (size, size))
        ImageOps.exif_transpose(im, in_place=True)  # not a copy when there is nothing to rotate
        im = to_rgb(im)
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        return np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: image too large (Pillow's decompression-bomb limit): {e}") from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(f"{name}: not an image Pillow can read (wrong extension or not an image)") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise ImageDecodeError(f"{name}: corrupt or truncated image data ({e})") from e
    except Exception as e:  # Pillow's plugins raise many other types on malformed data; all mean "unusable"
        raise ImageDecodeError(f"{name}: unreadable image data ({type(e).__name__}: {e})") from e


def decode_file(path: str | Path, size: int, digest: str | None = None) -> np.ndarray:
    """Decode an image file into a (size, size, 3) uint8 array; given its content `digest`, only those bytes (all a
    cache keyed by it may store: a file rewritten since it was scanned, or a short read, is a transient error)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read file ({e.strerror or e})", transient=True) from e
    if digest is not None and content_digest(data) != digest:
        raise ImageDecodeError(
            f"{path}: read other bytes than when it was scanned (changed, or a short read)", transient=True
        )
    return decode_bytes(data, size, str(path))
