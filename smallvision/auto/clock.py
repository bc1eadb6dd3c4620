"""auto's budget by the clock: one clock, and whether an optional step still fits (recorded, so a resume agrees)."""

from __future__ import annotations

import time
from pathlib import Path

from smallvision.auto.plan import TAIL


def now() -> float:
    """The clock auto's budget checks read (one place, so a test can move it)."""
    return time.perf_counter()


def budget_check(run_dir: Path, name: str, start: float, seconds: float, budget: float) -> dict:
    """Whether an optional step still fits the budget by the clock; recorded, so a resume decides the same."""
    from smallvision.engine.distributed import rank_zero_decision

    def decide() -> dict:
        elapsed = now() - start
        fits = elapsed + seconds <= budget - TAIL
        return {"run": fits, "elapsed": round(elapsed, 1), "estimate": round(seconds, 1)}

    return rank_zero_decision(run_dir / "checkpoints" / f"auto_{name}.json", decide)[0]
