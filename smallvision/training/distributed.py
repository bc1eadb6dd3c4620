"""Which process this is under torchrun, read from the environment (no torch import, so it is cheap to ask)."""

from __future__ import annotations

import os

from smallvision.config import RunConfig


def world_devices(cfg: RunConfig) -> int:
    """Processes per node: the config's, else torchrun's LOCAL_WORLD_SIZE, else 1."""
    if cfg.trainer.devices:
        return cfg.trainer.devices
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_rank_zero() -> bool:
    """True in the process that writes results (rank 0, or the only process)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
