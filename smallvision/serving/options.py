"""The server's limits and their defaults in one place, read by the CLI without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from smallvision.errors import SmallvisionError

# Pillow refuses images over this many pixels (its decompression-bomb limit, Image.MAX_IMAGE_PIXELS); a larger
# --max-pixels could never apply, so it is refused. A literal here keeps Pillow out of `smallvision --help`.
PILLOW_MAX_PIXELS = 89_478_485


def _limit(default: float, low: float, high: float, flag: str, help: str):
    """A server limit: its default, the range it may take, its `smallvision serve` flag and its help, stated once."""
    return field(default=default, metadata={"range": (low, high), "flag": flag, "help": help})


@dataclass(frozen=True)
class ServeOptions:
    """How much the server batches, queues and accepts; out-of-range values are refused, naming the option.

    Each field holds every fact about its limit; the CLI's serve options, create_app and api.serve read them here.
    """

    max_batch: int = _limit(
        8,
        1,
        1024,
        "--max-batch",
        "Most images run through the model at once (concurrent requests are batched together)",
    )
    max_wait_ms: float = _limit(
        5.0, 0, 1000, "--max-wait-ms", "Longest wait, in milliseconds, for more images to join a batch before it runs"
    )
    queue_size: int = _limit(
        64,
        1,
        100_000,
        "--queue",
        "Most images waiting for the model; past it a request gets 503 at once instead of queueing",
    )
    max_bytes: int = _limit(
        16 * 1024 * 1024, 1, 1 << 30, "--max-bytes", "Largest request body in bytes (all its images); past it, 413"
    )
    max_pixels: int = _limit(
        40_000_000,
        1,
        PILLOW_MAX_PIXELS,
        "--max-pixels",
        "Largest image in pixels (width x height, read from its header before decoding); past it, 413",
    )
    top_k: int = _limit(5, 1, 1000, "--top-k", "Classes returned per image when a request gives no ?top_k=")
    body_timeout_s: float = _limit(
        30.0,
        0.01,
        3600,
        "--body-timeout",
        "Longest time, in seconds, to receive a request's body; a stalled or trickling upload gets 408",
    )

    def __post_init__(self) -> None:
        """Refuse values that cannot apply, naming the option (its CLI flag and field) and its range."""
        for f in fields(self):
            low, high = f.metadata["range"]
            value = getattr(self, f.name)
            if not low <= value <= high:
                raise SmallvisionError(
                    f"{f.metadata['flag']} ({f.name}) = {value} is out of range: it must be between {low} and {high}"
                )


LIMITS = {f.name: f for f in fields(ServeOptions)}  # each limit's field: its default, range, flag and help
