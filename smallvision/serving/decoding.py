"""The server's decode pool: a request's images decode a few at a time, and a failed request stops its other decodes.

A request whose image fails (or whose client goes away) gets its answer only once its images no longer use the pool:
the ones not started are cancelled, the ones running (at most the pool's width) are waited for. So the queue's count
of requests in progress is also a bound on the decoding work they cause.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from smallvision.serving.uploads import Upload, decode_image


class Decoder:
    """Decode uploads into the model's input in a bounded pool, counting the images decoding now and in all."""

    def __init__(self, threads: int, size: int, max_pixels: int) -> None:
        """A pool of `threads` decoding to `size` x `size`, refusing images over `max_pixels`."""
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smallvision-decode")
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

    async def decode_all(self, uploads: list[Upload]) -> list[np.ndarray]:
        """Every upload decoded, in order; at the first failure the rest are cancelled before the error is raised."""
        futures: list[Future] = [self.pool.submit(self._decode, u) for u in uploads]
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            return list(await asyncio.gather(*waiting))
        finally:
            for future in futures:
                future.cancel()  # not started: never runs; running or done: unchanged
            await asyncio.wait(waiting)  # the running ones end (at most the pool's width), then the answer goes out
            for done in waiting:
                if not done.cancelled():
                    done.exception()  # retrieved: a second bad image is not logged as an unhandled error

    def close(self) -> None:
        """Stop the pool, dropping decodes not started (the app's shutdown)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
