"""Which process this is under torchrun, read from the environment (no torch import, so it is cheap to ask)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smallvision import atomic
from smallvision.config import RunConfig
from smallvision.errors import SmallvisionError


def world_devices(cfg: RunConfig) -> int:
    """Processes per node: the config's, else torchrun's LOCAL_WORLD_SIZE, else 1."""
    if cfg.trainer.devices:
        return cfg.trainer.devices
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_rank_zero() -> bool:
    """True in the process that writes results (rank 0, or the only process)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _recorded_or_decided(path: Path, decide: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    if path.is_file():
        return json.loads(path.read_text()), True
    plan = decide()
    atomic.write_json(path, plan)
    return plan, False


def rank_zero_decision(
    path: str | Path, decide: Callable[[], dict[str, Any]], wait: float = 3600.0
) -> tuple[dict[str, Any], bool]:
    """One decision for every process of a run: the one recorded at `path`, else rank 0's `decide()` (recorded there).

    Returns (decision, whether this process found it recorded rather than deciding it). With torch.distributed
    initialised rank 0 broadcasts it; before that (torchrun's processes run the feature stage before Lightning joins
    them) the other ranks wait for rank 0's file, so they never time anything themselves.
    """
    path = Path(path)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box: list[Any] = [_recorded_or_decided(path, decide) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        plan, recorded = box[0]
        return plan, recorded
    if is_rank_zero():
        return _recorded_or_decided(path, decide)
    deadline = time.monotonic() + wait
    while not path.is_file():
        if time.monotonic() > deadline:
            raise SmallvisionError(f"rank 0 recorded no decision in {path} within {wait:.0f} s")
        time.sleep(0.05)
    return json.loads(path.read_text()), True
