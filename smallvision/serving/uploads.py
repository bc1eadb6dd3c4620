"""What a client sends, read into images in memory: content types, byte and pixel limits, multipart parts.

Nothing here touches the file system: bodies are read into memory (bounded by the byte limit) and decoded from there.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from smallvision.data.decode import ImageDecodeError, decode_bytes

FIELDS = ("files", "file")  # multipart field names that carry images
RAW_TYPES = ("application/octet-stream",)  # besides image/*: a raw body of unnamed type is tried as an image


class UploadError(Exception):
    """A request the server refuses: the HTTP status and a message that says why and what to send instead."""

    def __init__(self, status: int, message: str) -> None:
        """Remember the status (400, 413, 415) and the message."""
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """One image as sent: its name (the file name, or a stand-in) and its bytes."""

    name: str
    data: bytes | memoryview  # a multipart part is a view into the request body, not a copy of it


def media_type(header: str | None) -> str:
    """The lower-case type/subtype of a Content-Type header, without parameters ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def body_kind(content_type: str | None) -> str:
    """'multipart' or 'raw' for the request's Content-Type; anything else is 415."""
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return "multipart"
    if kind.startswith("image/") or kind in RAW_TYPES:
        return "raw"
    raise UploadError(
        415,
        f"unsupported content type {kind or '(none)'!r}: send images as multipart/form-data (field 'files', "
        "repeatable) or one image as the raw body with an image/* content type",
    )


def check_length(header: str | None, max_bytes: int) -> None:
    """Refuse a declared Content-Length over the limit before reading any of the body."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise UploadError(400, f"invalid Content-Length header {header!r}") from None
    if length > max_bytes:
        raise UploadError(413, _too_many_bytes(max_bytes))


def _too_many_bytes(max_bytes: int) -> str:
    return f"request body over this server's limit of {max_bytes} bytes (--max-bytes); send fewer or smaller images"


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, stopped with 413 as soon as it passes the limit (a Content-Length can lie or be absent), and
    with 408 when it has not all arrived within `timeout_s` (a stalled or trickling client holds nothing longer).

    The chunks are joined once at the end: the body is copied once, not grown and then copied again.
    """
    received: list[bytes] = []
    length = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                received.append(chunk)
                length += len(chunk)
                if length > max_bytes:
                    raise UploadError(413, _too_many_bytes(max_bytes))
    except TimeoutError:
        raise UploadError(
            408,
            f"the request body did not arrive within {timeout_s:g} s (--body-timeout; {length} bytes came): "
            "send it at once",
        ) from None
    return b"".join(received)


def _disposition(value: bytes) -> dict[str, str]:
    """The parameters of a Content-Disposition header (name, filename)."""
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(value)
    return {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in params.items()}


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Upload]:
    """The image parts of a multipart/form-data body (fields 'files' or 'file'), in order.

    python-multipart's streaming parser stops at the part past `max_parts` (413): a body of thousands of empty parts
    costs no more than `max_parts` of them. It is plain Python, so the server runs it off the event loop.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data body without a boundary parameter in its Content-Type")
    parts: list[dict] = []
    header = [b"", b""]
    ended = []

    def on_part_begin() -> None:
        if len(parts) == max_parts:
            raise UploadError(
                413,
                f"more than {max_parts} images in one request; this server takes at most {max_parts} (--queue): "
                "send them in several requests",
            )
        parts.append({"headers": {}, "data": []})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # A slice of the body is kept as a range (no copy); the parser's own buffers (a boundary look-alike) as bytes.
        parts[-1]["data"].append((start, end) if data is body else bytes(data[start:end]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": lambda: ended.append(True),
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise UploadError(400, f"malformed multipart/form-data body ({e})") from e
    if not ended:
        raise UploadError(400, "truncated multipart/form-data body (no closing boundary)")
    return _uploads(body, parts)


def _uploads(body: bytes, parts: list[dict]) -> list[Upload]:
    """The parsed parts as uploads: each must be a file in 'files' (or 'file') with an image (or unnamed) type."""
    uploads = []
    for number, part in enumerate(parts, 1):
        params = _disposition(part["headers"].get(b"content-disposition", b""))
        field = params.get("name", "")
        if field not in FIELDS:
            raise UploadError(
                400, f"unexpected form field {field!r}: send images as files in the field 'files' (or 'file')"
            )
        name = params.get("filename") or f"{field}[{number}]"
        kind = media_type(part["headers"].get(b"content-type", b"").decode("latin-1"))
        if kind and not (kind.startswith("image/") or kind in RAW_TYPES):
            raise UploadError(415, f"{name}: content type {kind!r} is not an image type (image/*)")
        uploads.append(Upload(name, _part_data(body, part["data"])))
    if not uploads:
        raise UploadError(400, "no images in the request: send one or more files in the field 'files'")
    return uploads


def _part_data(body: bytes, pieces: list[tuple[int, int] | bytes]) -> bytes | memoryview:
    """A part's bytes: a view into the body when they are one range of it (the usual case), else joined."""
    if len(pieces) == 1 and isinstance(pieces[0], tuple):
        start, end = pieces[0]
        return memoryview(body)[start:end]
    return b"".join(body[p[0] : p[1]] if isinstance(p, tuple) else p for p in pieces)


def check_pixels(upload: Upload, max_pixels: int, size: int | None = None) -> int:
    """Refuse an image whose header declares more than `max_pixels` pixels, before any pixel is decoded; the pixels
    its decode holds (a JPEG decodes at the reduced scale `size` allows; 0 when Pillow cannot open it: decode_image
    says why).

    It leaves the warning filters alone (decode threads run it at once; warnings.catch_warnings is not thread-safe):
    Pillow's bomb warning is an error by data/decode.py's filter, and either form of it means over the limit.
    """
    try:
        im = Image.open(io.BytesIO(upload.data))
        width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(413, f"{upload.name}: image over Pillow's decompression-bomb limit; refused") from None
    except Exception:  # not an image Pillow can open: decode_image's ImageDecodeError says why
        return 0
    if width * height > max_pixels:
        raise UploadError(
            413,
            f"{upload.name}: {width}x{height} = {width * height} pixels is over this server's limit of "
            f"{max_pixels} pixels (--max-pixels); send a smaller image",
        )
    if size is not None and im.format == "JPEG":
        im.draft(None, (size, size))  # what decode_bytes asks for; only the header is read
    return im.size[0] * im.size[1]


def decode_image(upload: Upload, size: int, max_pixels: int) -> np.ndarray:
    """The upload as the model's uint8 [size, size, 3] input, exactly as `smallvision.predict` decodes a file."""
    if not upload.data:
        raise UploadError(400, f"{upload.name}: empty upload (0 bytes)")
    upload = Upload(upload.name, bytes(upload.data))  # a part's own copy only while it decodes (pool-wide at most)
    check_pixels(upload, max_pixels)
    try:
        return decode_bytes(upload.data, size, upload.name)
    except ImageDecodeError as e:
        raise UploadError(400, str(e)) from e
