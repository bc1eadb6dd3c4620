"""The image cache remembers only what the bytes decide, for the decoder that decided; corrupt shards are rebuilt."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, UnidentifiedImageError

from smallvision.data import decode
from smallvision.data.cache import decoded_images, image_store
from smallvision.data.decode import content_digest, decode_file
from tests.imagegen import make_class_folder

SIZE = 24


@pytest.fixture
def images(tmp_path, fresh_cache) -> tuple[list[Path], list[str]]:
    """Six real PNG files and their content digests, with an empty cache."""
    paths = sorted(make_class_folder(tmp_path / "data", per_class=2).rglob("*.png"))
    return paths, [content_digest(p.read_bytes()) for p in paths]


def _once(monkeypatch, owner, name: str, error: BaseException, when) -> None:
    """Make owner.name raise `error` the first time `when(args)` holds; every other call runs the real one."""
    real = getattr(owner, name)
    fired = []

    def patched(*args, **kwargs):
        if not fired and when(args):
            fired.append(True)
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)


@pytest.mark.parametrize("cause", ["read error", "short read", "out of memory"])
def test_a_transient_failure_is_reported_once_and_decoded_next_run(images, monkeypatch, caplog, cause):
    paths, digests = images
    if cause == "read error":  # the disk fails this file's read once
        _once(monkeypatch, Path, "read_bytes", OSError(errno.EIO, "Input/output error"), lambda a: a[0] == paths[0])
    elif cause == "short read":  # the disk returns half of this file's bytes once, and no error
        real_read, cut = Path.read_bytes, []

        def read_bytes(self: Path) -> bytes:
            data = real_read(self)
            if self == paths[0] and not cut:
                cut.append(self)
                return data[: len(data) // 2]
            return data

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    else:  # the decoder runs out of memory on this file's bytes once
        first = paths[0].read_bytes()
        _once(monkeypatch, Image, "open", MemoryError(), lambda a: a[0].getvalue() == first)
    with caplog.at_level(logging.WARNING, logger="smallvision.data.cache"):
        arr, failed = decoded_images(paths, digests, SIZE, progress=False)
    assert list(failed) == [0] and len(arr) == 5
    again, later = decoded_images(paths, digests, SIZE, progress=False)
    assert later == {} and np.array_equal(again[0], decode_file(paths[0], SIZE))
    assert failed.transient == {0}
    assert str(paths[0]) in caplog.text and "tried again next run" in caplog.text


def test_a_decode_failure_is_remembered_for_its_decoder_only(images, monkeypatch):
    paths, digests = images
    real_open, real_version = Image.open, PIL.__version__

    def cannot_read(*args, **kwargs):
        raise UnidentifiedImageError("cannot identify image file")

    monkeypatch.setattr(PIL, "__version__", "9.0.0")  # an older Pillow that cannot read these files
    monkeypatch.setattr(Image, "open", cannot_read)
    _, first = decoded_images(paths, digests, SIZE, progress=False)
    assert len(first) == 6 and "not an image" in first[0]
    monkeypatch.setattr(Image, "open", real_open)
    _, failed = decoded_images(paths, digests, SIZE, progress=False)
    assert len(failed) == 6, "the same decoder's verdict is remembered, not decoded again"
    monkeypatch.setattr(PIL, "__version__", real_version)  # Pillow upgraded: its own verdict is asked for
    arr, failed = decoded_images(paths, digests, SIZE, progress=False)
    assert failed == {} and np.array_equal(arr[5], decode_file(paths[5], SIZE))
    assert not first.transient


def _damage(shard: Path, part: str) -> None:
    """Flip the last byte of a shard's array, or cut its JSON index short."""
    if part == "array":
        raw = bytearray(shard.read_bytes())
        raw[-1] ^= 0xFF
        shard.write_bytes(bytes(raw))
    else:
        index = shard.with_suffix(".json")
        index.write_text(index.read_text()[:20])


@pytest.mark.parametrize("part", ["array", "index"])
def test_two_corrupt_shards_are_rebuilt_once_and_named(images, monkeypatch, caplog, part):
    paths, digests = images
    decoded_images(paths[:3], digests[:3], SIZE, progress=False)
    want, _ = decoded_images(paths, digests, SIZE, progress=False)  # a second shard holds the other three
    shards = sorted(image_store(SIZE).root.glob("shard-*.npy"))
    assert len(shards) == 2 and all(json.loads(s.with_suffix(".json").read_text())["keys"] for s in shards)
    for shard in shards:
        _damage(shard, part)
    with caplog.at_level(logging.WARNING, logger="smallvision.data.cache"):
        arr, failed = decoded_images(paths, digests, SIZE, progress=False)
    assert failed == {} and np.array_equal(arr, want)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all(any(shard.stem in w for w in warnings) for shard in shards), warnings
    caplog.clear()

    def no_decode(*args, **kwargs):
        raise AssertionError("a sound cache decodes nothing")

    monkeypatch.setattr(decode, "decode_bytes", no_decode)
    with caplog.at_level(logging.WARNING, logger="smallvision.data.cache"):
        arr, failed = decoded_images(paths, digests, SIZE, progress=False)
    assert failed == {} and np.array_equal(arr, want) and not caplog.records
    assert all("rebuilt" in w for w in warnings), warnings
