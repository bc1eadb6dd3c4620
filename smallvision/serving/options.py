"""The server's limits and their defaults in one place, read by the CLI without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

from smallvision.errors import SmallvisionError

# Pillow refuses images over this many pixels (its decompression-bomb limit, Image.MAX_IMAGE_PIXELS); a larger
# --max-pixels could never apply, so it is refused. A literal here keeps Pillow out of `smallvision --help`.
PILLOW_MAX_PIXELS = 89_478_485

HELP = {
    "max_batch": "Most images run through the model at once (concurrent requests are batched together)",
    "max_wait_ms": "Longest wait, in milliseconds, for more images to join a batch before it runs",
    "queue_size": "Most images waiting for the model; past it a request gets 503 at once instead of queueing",
    "max_bytes": "Largest request body in bytes (all its images); past it, 413",
    "max_pixels": "Largest image in pixels (width x height, read from its header before decoding); past it, 413",
    "top_k": "Classes returned per image when a request gives no ?top_k=",
    "body_timeout_s": "Longest time, in seconds, to receive a request's body; a stalled or trickling upload gets 408",
}

# The `smallvision serve` flag of each option, so an error names what the user typed.
FLAGS = {
    "max_batch": "--max-batch",
    "max_wait_ms": "--max-wait-ms",
    "queue_size": "--queue",
    "max_bytes": "--max-bytes",
    "max_pixels": "--max-pixels",
    "top_k": "--top-k",
    "body_timeout_s": "--body-timeout",
}


@dataclass(frozen=True)
class ServeOptions:
    """How much the server batches, queues and accepts; out-of-range values are refused, naming the option."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    queue_size: int = 64
    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 40_000_000
    top_k: int = 5
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        """Refuse values that cannot apply, naming the option (its CLI flag and field) and its range."""
        ranges = {
            "max_batch": (1, 1024),
            "max_wait_ms": (0, 1000),
            "queue_size": (1, 100_000),
            "max_bytes": (1, 1 << 30),
            "max_pixels": (1, PILLOW_MAX_PIXELS),
            "top_k": (1, 1000),
            "body_timeout_s": (0.01, 3600),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise SmallvisionError(
                    f"{FLAGS[name]} ({name}) = {value} is out of range: it must be between {low} and {high}"
                )
