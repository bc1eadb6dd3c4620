"""Persistent caches keyed by file content: decoded images and (via train.features) backbone features.

A store is a folder of shards. Each shard is an `.npy` array plus a `.json` index (row keys, checksum) written
last, so a shard without its index was interrupted and is ignored. Before a fill reads a shard it checks it: a shard
whose checksum, index or row count fails is deleted with a warning naming it, and its rows are rebuilt in that fill,
never trusted. Decode failures are remembered only when the bytes decide them, and only for the decoder that failed
(decode.decoder_version()): an unreadable file or an upgraded Pillow is tried again.
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
from smallvision.errors import SmallvisionError

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
    with open(path, "rb") as f:  # streamed: a 154 MB shard is never held twice in memory
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class Failures(dict[int, str]):
    """Positions that could not be used, with reasons; those in `transient` failed for reasons outside the file's
    content (a read error, memory), so they are reported for this run but never remembered."""

    def __init__(self, reasons: dict[int, str] | None = None, transient: Iterable[int] = ()) -> None:
        super().__init__(reasons or {})
        self.transient = set(transient)


@dataclass
class _Shard:
    index_path: Path
    array_path: Path
    keys: list[str]
    checksum: str


class ShardedStore:
    """Rows of one shape and dtype, keyed by content hash, with decode failures remembered as reasons."""

    def __init__(self, root: Path, description: dict) -> None:
        from smallvision.data.decode import decoder_version

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        desc_path = self.root / "store.json"
        if not desc_path.exists():
            atomic.write_json(desc_path, description)
        self.decoder = decoder_version()
        self._rows: dict[str, tuple[_Shard, int]] = {}
        self._failures: dict[str, str] = {}
        self._arrays: dict[Path, np.ndarray] = {}
        self._verified: set[Path] = set()
        self._load_indexes()

    def _load_indexes(self) -> None:
        for index_path in sorted(self.root.glob("shard-*.json")):
            try:
                meta = json.loads(index_path.read_text())
                shard = _Shard(index_path, index_path.with_suffix(".npy"), list(meta["keys"]), meta["checksum"])
                failures = dict(meta.get("failures", {}))
            except OSError as e:  # unreadable now, perhaps not next time: skipped, not deleted
                log.warning("cache index %s cannot be read (%s); its entries are recomputed this run", index_path, e)
                continue
            except (ValueError, KeyError, TypeError) as e:
                log.warning("cache index %s is corrupt (%s); deleting its shard, its rows are rebuilt", index_path, e)
                index_path.unlink(missing_ok=True)
                index_path.with_suffix(".npy").unlink(missing_ok=True)
                continue
            if meta.get("decoder") == self.decoder:
                self._failures.update(failures)
            elif failures:
                log.debug("%s: %d decode failure(s) from another decoder are tried again", index_path, len(failures))
            for row, key in enumerate(shard.keys):
                self._rows[key] = (shard, row)

    def failure(self, key: str) -> str | None:
        """The remembered reason this content could not be processed, if any."""
        return self._failures.get(key)

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys that have neither a stored row nor a remembered failure."""
        return [k for k in keys if k not in self._rows and k not in self._failures]

    def verify(self, keys: Iterable[str]) -> None:
        """Check each shard holding one of `keys` (once per store); a corrupt one is deleted and its keys go missing."""
        shards = {id(hit[0]): hit[0] for key in keys if (hit := self._rows.get(key))}
        for shard in shards.values():
            self._array(shard)

    def _array(self, shard: _Shard) -> np.ndarray | None:
        if shard.array_path not in self._verified:
            try:
                problem = "checksum mismatch" if _array_checksum(shard.array_path) != shard.checksum else ""
                arr = np.load(shard.array_path, mmap_mode="r")
                if not problem and len(arr) != len(shard.keys):
                    problem = f"{len(arr)} rows for {len(shard.keys)} keys"
            except (OSError, ValueError) as e:
                problem = str(e)
            if problem:
                log.warning(
                    "cache shard %s is corrupt (%s); deleting it, its %d entries are rebuilt",
                    shard.array_path,
                    problem,
                    len(shard.keys),
                )
                self._drop(shard)
                return None
            self._arrays[shard.array_path] = arr
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

    def read(self, keys: Sequence[str]) -> np.ndarray:
        """The rows for `keys` (at least one), which a fill_store just checked or wrote."""
        rows = self.get(keys)
        if rows is None:
            raise SmallvisionError(
                f"cache {self.root}: a shard checked a moment ago is gone or changed (another run clearing this cache "
                "at the same time?); run again"
            )
        return rows

    def put(self, keys: Sequence[str], rows: np.ndarray, failures: dict[str, str] | None = None) -> None:
        """Add a shard of rows and remembered failures (under this decoder) atomically: array first, index last."""
        name = f"shard-{uuid.uuid4().hex[:12]}"
        array_path = self.root / f"{name}.npy"
        with atomic.atomic_path(array_path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(rows))
        meta = {
            "keys": list(keys),
            "checksum": _array_checksum(array_path),
            "failures": failures or {},
            "decoder": self.decoder,
        }
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
) -> dict[str, str]:
    """Compute and store the rows for the keys the store lacks; `compute` maps positions to (rows, failures).

    The shards already holding any of `keys` are checked first, so a corrupt one is rebuilt here, not found later.
    Work goes in chunks of `chunk` keys, one shard each: memory stays bounded (1024 decoded 224 px images are 154 MB;
    20k at once would be 3 GB), and a run killed midway keeps every finished chunk. Returns the failures not
    remembered ({key: reason} for the positions a `Failures` marks transient): a later fill tries them again.
    """
    store.verify(keys)
    wanted: dict[str, int] = {}
    for pos, key in enumerate(keys):
        if key not in wanted and store.missing([key]):
            wanted[key] = pos
    positions = list(wanted.values())
    passing: dict[str, str] = {}
    for start in range(0, len(positions), chunk):
        part = positions[start : start + chunk]
        rows, failed = compute(part)
        transient = failed.transient if isinstance(failed, Failures) else set()
        ok_keys = [keys[p] for p in part if p not in failed]
        store.put(ok_keys, rows, {keys[p]: reason for p, reason in failed.items() if p not in transient})
        passing.update({keys[p]: failed[p] for p in transient})
    return passing


def image_store(size: int) -> ShardedStore:
    """The decoded-image store for one target size."""
    from smallvision.data.decode import RESIZE_POLICY

    desc = {"kind": "images", "size": size, "resize": RESIZE_POLICY, "format": 1}
    return ShardedStore(cache_root() / "images" / f"{size}px-{key_of(desc)}", desc)


def decoded_images(
    paths: Sequence[Path], digests: Sequence[str], size: int, *, progress: bool = True
) -> tuple[np.ndarray, Failures]:
    """Decode each file once per (content, size): (uint8 N_ok x size x size x 3, {position: failure reason})."""
    store, compute = _image_filler(paths, digests, size, progress)
    passing = fill_store(store, digests, compute)
    failures = Failures(
        {pos: reason for pos, d in enumerate(digests) if (reason := store.failure(d) or passing.get(d)) is not None},
        transient=[pos for pos, d in enumerate(digests) if d in passing],
    )
    ok = [d for pos, d in enumerate(digests) if pos not in failures]
    return (store.read(ok) if ok else np.zeros((0, size, size, 3), np.uint8)), failures


def cache_images(paths: Sequence[Path], digests: Sequence[str], size: int, *, progress: bool = True) -> int:
    """Fill the image cache for these files without loading them all (memory stays at one chunk); return failures."""
    store, compute = _image_filler(paths, digests, size, progress)
    passing = fill_store(store, digests, compute)
    return sum(store.failure(d) is not None or d in passing for d in digests)


def _image_filler(paths: Sequence[Path], digests: Sequence[str], size: int, progress: bool):
    """The image store for `size` and the function that decodes positions of `paths` (with those `digests`) into it."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from smallvision.data.decode import ImageDecodeError, decode_file

    store = image_store(size)

    def compute(positions: list[int]) -> tuple[np.ndarray, Failures]:
        def one(pos: int) -> np.ndarray | ImageDecodeError:
            try:
                return decode_file(paths[pos], size, digests[pos])
            except ImageDecodeError as e:
                return e

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
        errors = {p: r for p, r in zip(positions, results, strict=True) if isinstance(r, ImageDecodeError)}
        failed = Failures(
            {p: str(e).removeprefix(f"{paths[p]}: ") for p, e in errors.items()},
            transient=[p for p, e in errors.items() if e.transient],
        )
        if failed.transient:
            first = errors[min(failed.transient)]
            log.warning(
                "%d file(s) could not be decoded this time (%s); they are skipped now and tried again next run",
                len(failed.transient),
                first,
            )
        good = [r for r in results if not isinstance(r, ImageDecodeError)]
        rows = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
        return rows, failed

    return store, compute
