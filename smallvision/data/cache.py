"""Persistent caches keyed by file content: decoded images and (via train.features) backbone features.

A store is a folder of shards. Each shard is an `.npy` array plus a `.json` index (row keys, checksum) written
last, so a shard without its index was interrupted and is ignored. A shard whose checksum fails is deleted and
its rows are rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smallvision import atomic

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The user cache folder: $SMALLVISION_CACHE_DIR, else $XDG_CACHE_HOME/smallvision, else ~/.cache/smallvision."""
    env = os.environ.get("SMALLVISION_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smallvision"


def key_of(parts: dict) -> str:
    """A short stable hex key for a dict of settings."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=10).hexdigest()


def _array_checksum(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


@dataclass
class _Shard:
    index_path: Path
    array_path: Path
    keys: list[str]
    checksum: str


class ShardedStore:
    """Rows of one shape and dtype, keyed by content hash, with failures remembered as reasons."""

    def __init__(self, root: Path, description: dict) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        desc_path = self.root / "store.json"
        if not desc_path.exists():
            atomic.write_json(desc_path, description)
        self._rows: dict[str, tuple[_Shard, int]] = {}
        self._failures: dict[str, str] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self._verified: set[Path] = set()
        self._load_indexes()

    def _load_indexes(self) -> None:
        for index_path in sorted(self.root.glob("shard-*.json")):
            try:
                meta = json.loads(index_path.read_text())
                shard = _Shard(index_path, index_path.with_suffix(".npy"), meta["keys"], meta["checksum"])
                self._failures.update(meta.get("failures", {}))
            except (OSError, ValueError, KeyError) as e:
                log.warning("cache index %s is unreadable (%s); ignoring it", index_path, e)
                continue
            for row, key in enumerate(shard.keys):
                self._rows[key] = (shard, row)

    def failure(self, key: str) -> str | None:
        """The remembered reason this content could not be processed, if any."""
        return self._failures.get(key)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys that have neither a stored row nor a remembered failure."""
        return [k for k in keys if k not in self._rows and k not in self._failures]

    def _array(self, shard: _Shard) -> np.ndarray | None:
        if shard.array_path not in self._verified:
            try:
                ok = _array_checksum(shard.array_path) == shard.checksum
            except OSError:
                ok = False
            if not ok:
                log.warning("cache shard %s is corrupt or missing; rebuilding its entries", shard.array_path)
                self._drop(shard)
                return None
            self._verified.add(shard.array_path)
        if shard.array_path not in self._arrays:
            self._arrays[shard.array_path] = np.load(shard.array_path, mmap_mode="r")
        return self._arrays[shard.array_path]

    def _drop(self, shard: _Shard) -> None:
        for key in shard.keys:
            if self._rows.get(key, (None,))[0] is shard:
                del self._rows[key]
        shard.index_path.unlink(missing_ok=True)
        shard.array_path.unlink(missing_ok=True)

    def get(self, keys: Sequence[str]) -> np.ndarray | None:
        """Stack the rows for `keys` (all must be present and valid), or None if any is missing or corrupt."""
        parts = []
        for key in keys:
            if key not in self._rows:
                return None
            shard, row = self._rows[key]
            arr = self._array(shard)
            if arr is None:
                return None
            parts.append(arr[row])
        return np.stack(parts) if parts else None

    def put(self, keys: Sequence[str], rows: np.ndarray, failures: dict[str, str] | None = None) -> None:
        """Add a shard of rows (and remembered failures) atomically: array first, index last."""
        name = f"shard-{uuid.uuid4().hex[:12]}"
        array_path = self.root / f"{name}.npy"
        with atomic.atomic_path(array_path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(rows))
        meta = {"keys": list(keys), "checksum": _array_checksum(array_path), "failures": failures or {}}
        index_path = self.root / f"{name}.json"
        atomic.write_json(index_path, meta)
        shard = _Shard(index_path, array_path, meta["keys"], meta["checksum"])
        self._verified.add(array_path)
        for row, key in enumerate(shard.keys):
            self._rows[key] = (shard, row)
        self._failures.update(meta["failures"])


def fill_store(
    store: ShardedStore,
    keys: Sequence[str],
    compute: Callable[[list[int]], tuple[np.ndarray, dict[int, str]]],
    chunk: int = 1024,
) -> None:
    """Compute and store the rows for the keys the store lacks; `compute` maps positions to (rows, failures).

    Work goes in chunks of `chunk` keys, one shard each: memory stays bounded (1024 decoded 224 px images are 154 MB;
    20k at once would be 3 GB), and a run killed midway keeps every finished chunk.
    """
    wanted: dict[str, int] = {}
    for pos, key in enumerate(keys):
        if key not in wanted and store.missing([key]):
            wanted[key] = pos
    positions = list(wanted.values())
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        rows, failed = compute(part)
        ok_keys = [keys[p] for p in part if p not in failed]
        store.put(ok_keys, rows, {keys[p]: reason for p, reason in failed.items()})


def image_store(size: int) -> ShardedStore:
    """The decoded-image store for one target size."""
    from smallvision.data.decode import RESIZE_POLICY

    desc = {"kind": "images", "size": size, "resize": RESIZE_POLICY, "format": 1}
    return ShardedStore(cache_root() / "images" / f"{size}px-{key_of(desc)}", desc)


def decoded_images(
    paths: Sequence[Path], digests: Sequence[str], size: int, *, progress: bool = True
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode each file once per (content, size): (uint8 N_ok x size x size x 3, {position: failure reason})."""
    store, compute = _image_filler(paths, size, progress)
    fill_store(store, digests, compute)
    failures = {pos: reason for pos, d in enumerate(digests) if (reason := store.failure(d)) is not None}
    ok = [d for pos, d in enumerate(digests) if pos not in failures]
    arr = store.get(ok)
    if arr is None and ok:
        fill_store(store, digests, compute)
        arr = store.get(ok)
    return (arr if arr is not None else np.zeros((0, size, size, 3), np.uint8)), failures


def cache_images(paths: Sequence[Path], digests: Sequence[str], size: int, *, progress: bool = True) -> int:
    """Fill the image cache for these files without loading them all (memory stays at one chunk); return failures."""
    store, compute = _image_filler(paths, size, progress)
    fill_store(store, digests, compute)
    return sum(store.failure(d) is not None for d in digests)


def _image_filler(paths: Sequence[Path], size: int, progress: bool):
    """The image store for `size` and the function that decodes positions of `paths` into it."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from smallvision.data.decode import ImageDecodeError, decode_file

    store = image_store(size)

    def compute(positions: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        def one(pos: int) -> np.ndarray | str:
            try:
                return decode_file(paths[pos], size)
            except ImageDecodeError as e:
                return str(e).removeprefix(f"{paths[pos]}: ")

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(
                tqdm(
                    pool.map(one, positions),
                    total=len(positions),
                    desc="decode",
                    unit="img",
                    disable=not progress,
                )
            )
        failed = {p: r for p, r in zip(positions, results, strict=True) if isinstance(r, str)}
        good = [r for r in results if not isinstance(r, str)]
        rows = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
        return rows, failed

    return store, compute
