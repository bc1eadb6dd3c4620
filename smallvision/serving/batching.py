"""Micro-batching: concurrent requests' images share one bounded queue and run through the model together.

One worker task takes up to `max_batch` waiting images (waiting at most `max_wait_ms` for more to arrive), runs the
model once on them in a thread of its own (so the event loop keeps accepting requests) and answers each request.
When the queue is full a request is refused at once (Overloaded), so memory stays bounded under any load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Overloaded(Exception):
    """The queue has no room for a request's images: answer 503 now rather than queue without bound."""


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the batcher did: batches run, their sizes, images answered, requests refused, model time."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    sizes: Counter = field(default_factory=Counter)
    rejected: int = 0
    model_seconds: float = 0.0

    def record(self, size: int, seconds: float) -> None:
        """Count one batch of `size` images that took `seconds` in the model."""
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)
        self.sizes[size] += 1
        self.model_seconds += seconds

    def to_dict(self) -> dict:
        """Plain values for /health."""
        return {
            "batches": self.batches,
            "images": self.images,
            "largest_batch": self.largest,
            "mean_batch": round(self.images / self.batches, 3) if self.batches else 0.0,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
            "rejected_requests": self.rejected,
            "model_seconds": round(self.model_seconds, 3),
        }


class MicroBatcher:
    """Run `model` (uint8 NHWC images -> float32 [N, C]) on batches gathered from concurrent requests."""

    def __init__(
        self, model: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float, queue_size: int
    ) -> None:
        """Set the limits; the worker starts with the first request, in that request's event loop."""
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self.stats = BatchStats()
        self._waiting: deque[_Job] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smallvision-model")
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Images queued and not yet taken by the worker."""
        return len(self._waiting)

    def full(self) -> bool:
        """True when not even one more image fits in the queue."""
        return len(self._waiting) >= self.queue_size

    def refuse(self, images: int) -> Overloaded:
        """Count a refused request and say why (the caller raises it)."""
        self.stats.rejected += 1
        return Overloaded(
            f"server busy: {len(self._waiting)} images already wait for the model (queue size {self.queue_size}) "
            f"and this request brings {images}; retry shortly"
        )

    async def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Class probabilities of each image, batched with other requests' images; Overloaded when the queue is full."""
        if len(images) > self.queue_size - len(self._waiting):
            raise self.refuse(len(images))
        self._start()
        loop = asyncio.get_running_loop()
        jobs = [_Job(image, loop.create_future()) for image in images]
        self._waiting.extend(jobs)
        self._arrived.set()
        return list(await asyncio.gather(*(job.future for job in jobs)))

    def _start(self) -> None:
        """Start the worker in the running loop, again if that loop changed or the worker ended."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop = loop
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._work(), name="smallvision-batcher")

    async def _gather(self) -> list[_Job]:
        """Wait for a first image, then up to max_wait for more, up to max_batch; the jobs still wanted."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(self._waiting) < self.max_batch:
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            except TimeoutError:
                break
        jobs = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
        return [job for job in jobs if not job.future.done()]  # a request cancelled (client gone) needs no answer

    async def _work(self) -> None:
        """Forever: gather a batch, run the model on it in the model thread, answer each image's request."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            if not jobs:
                continue
            start = time.perf_counter()
            try:
                probs = await loop.run_in_executor(self._executor, self.model, np.stack([j.image for j in jobs]))
                if len(probs) != len(jobs):
                    raise RuntimeError(f"the model answered {len(probs)} rows for a batch of {len(jobs)} images")
            except Exception as e:  # any failure: every request in the batch gets the error, the worker goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.stats.record(len(jobs), time.perf_counter() - start)
            for job, row in zip(jobs, probs, strict=True):
                if not job.future.done():
                    job.future.set_result(row)

    def close(self) -> None:
        """Stop the worker and the model thread (the app's shutdown)."""
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
