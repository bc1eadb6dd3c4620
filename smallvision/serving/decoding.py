"""The server's decode pools: a request's images decode a few at a time, large images apart from the rest, and a
failed request stops its other decodes.

Each image's header is read first (the pixels its decode will hold); an image over LARGE_PIXELS decodes in a lane of
its own (half the threads, at the lowest CPU priority), so decompression-heavy uploads never hold every thread, nor
the CPU, while an ordinary photo waits. A request whose image fails (or whose client goes away) gets its answer only
once its images no longer use a pool: the ones not started are cancelled, the ones running (at most the pools' width)
are waited for. So the queue's count of requests in progress is also a bound on the decoding work they cause.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from smallvision.serving.uploads import Upload, check_pixels, decode_image

log = logging.getLogger(__name__)

# Images whose decode holds more pixels go to the large lane. A JPEG counts at the scale it decodes at: a 12 MP phone
# photo served at 224 px decodes at 1/8 scale (0.2 MP), in the ordinary lane.
LARGE_PIXELS = 4_000_000
# The large lane's threads run at this nice (Linux): under load they take the CPU the ordinary lane, the model and the
# event loop leave over (measured in docs/export-and-serving.md, "Under hostile load").
LARGE_NICE = 19


def _lowest_priority() -> None:
    """Give the calling thread the lowest CPU priority (LARGE_NICE), so its work takes only CPU time nothing else wants.

    Linux only, where a thread is a task of its own that setpriority takes by its id; elsewhere that id is no process
    id (macOS would renice whatever process has it), so the thread keeps the process's priority there, as it does
    where the system refuses (a failed initializer would break the lane: every large image a 500).
    """
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LARGE_NICE)
    except OSError as e:
        log.warning("large-image decode thread keeps the server's CPU priority: setpriority refused (%s)", e)


class Decoder:
    """Decode uploads into the model's input in bounded pools, counting the images decoding now and in all."""

    def __init__(self, threads: int, size: int, max_pixels: int) -> None:
        """`threads` for headers, parsing and ordinary images, half as many for large ones; `size` x `size` out.

        Pillow's plugins load now (0.2 s), not in the first request that is not a PNG or JPEG: there they held a
        decode thread while that request's other images decoded in the rest.
        """
        from PIL import Image

        Image.init()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smallvision-decode")
        self.large = ThreadPoolExecutor(
            max_workers=max(1, threads // 2), thread_name_prefix="smallvision-large", initializer=_lowest_priority
        )
        self.size = size
        self.max_pixels = max_pixels
        self.running = 0  # images being decoded now (for /health)
        self.started = 0  # images whose decode started since the server started (for /health)
        self._lock = threading.Lock()

    def _decode(self, upload: Upload) -> np.ndarray:
        """One image, counted while it decodes (runs in a pool thread)."""
        with self._lock:
            self.running += 1
            self.started += 1
        try:
            return decode_image(upload, self.size, self.max_pixels)
        finally:
            with self._lock:
                self.running -= 1

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in `pool`; when cancelled, a call not started never runs and a running one is waited for."""
        future = pool.submit(fn, *args)
        waiting = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            future.cancel()
            await asyncio.wait([waiting])
            if not waiting.cancelled():
                waiting.exception()  # retrieved: its error is not logged as unhandled
            raise

    async def _one(self, upload: Upload) -> np.ndarray:
        """Read the image's header (refusing it over --max-pixels), then decode it in its lane."""
        pixels = await self._run(self.pool, check_pixels, upload, self.max_pixels, self.size)
        return await self._run(self.large if pixels > LARGE_PIXELS else self.pool, self._decode, upload)

    async def decode_all(self, uploads: list[Upload]) -> list[np.ndarray]:
        """Every upload decoded, in order; at the first failure the rest are cancelled before the error is raised."""
        tasks = [asyncio.ensure_future(self._one(u)) for u in uploads]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()  # done: unchanged
            await asyncio.wait(tasks)  # the running decodes end, then the answer goes out
            for task in tasks:
                if not task.cancelled():
                    task.exception()

    def close(self) -> None:
        """Stop the pools, dropping work not started (the app's shutdown)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.large.shutdown(wait=False, cancel_futures=True)
