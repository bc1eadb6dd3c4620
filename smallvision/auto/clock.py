"""auto's budget by the clock: one clock, whether an optional step still fits (recorded, so a resume agrees), and
each step's estimate against the seconds it took."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smallvision.auto.plan import TAIL

TIMING = "timing "  # a ledger row timing a backbone's figures: estimated and shown, but it foretells no work


def now() -> float:
    """The clock auto's budget checks read (one place, so a test can move it)."""
    return time.perf_counter()


def budget_check(run_dir: Path, name: str, start: float, estimate: Callable[[], dict], budget: float) -> dict:
    """Whether an optional step still fits the budget by the clock, `estimate()` giving its `seconds` (and any other
    figure kept with the decision); recorded, so a resume decides the same without estimating again."""
    from smallvision.engine.distributed import rank_zero_decision

    def decide() -> dict:
        figures = {k: round(v, 1) for k, v in estimate().items()}
        elapsed = now() - start
        fits = elapsed + figures["seconds"] <= budget - TAIL
        return {**figures, "run": fits, "elapsed": round(elapsed, 1), "estimate": figures["seconds"]}

    return rank_zero_decision(run_dir / "checkpoints" / f"auto_{name}.json", decide)[0]


def round_check(
    run_dir: Path, name: str, start: float, rnd: dict, budget: float, ledger: Ledger, reserve: float = 0.0
) -> dict:
    """How many of a fine-tuning round's epochs still fit the budget by the clock, less `reserve` seconds kept for
    planned steps after it, its estimate scaled by the `ledger`'s ratio for rounds (`ratio`, and `basis`: what it was
    measured on): a round that overran shrinks the next ones instead of dropping them. Recorded, so a resume decides
    (and says) the same."""
    from smallvision.engine.distributed import rank_zero_decision

    def decide() -> dict:
        ratio, basis = ledger.ratio("round"), "the rounds so far" if ledger.timed("round") else "the steps so far"
        elapsed = now() - start
        left, need = budget - TAIL - reserve - elapsed, rnd["seconds"] * ratio
        setup = (rnd.get("setup", 0.0) + rnd.get("stage", 0.0)) * ratio  # paid whatever the epochs
        per_epoch = max(need - setup, 1e-9) / rnd["epochs"]
        epochs = rnd["epochs"] if need <= left else int(max(left - setup, 0.0) / per_epoch)
        figures = {"estimate": round(need, 1), "ratio": round(ratio, 2), "basis": basis}
        return {"epochs": epochs, "elapsed": round(elapsed, 1), **figures}

    return rank_zero_decision(run_dir / "checkpoints" / f"auto_{name}.json", decide)[0]


@dataclass
class Ledger:
    """Each step's planned seconds against the seconds it took by the clock (auto_plan.json's `actual`)."""

    rows: list[dict] = field(default_factory=list)

    def record(
        self, step: str, estimate: float, seconds: float, remade: float = 1.0, images: int | None = None
    ) -> None:
        """One step done: its estimate when it started, what it took and their ratio; `remade`: the factor the plan's
        estimate was scaled by, from the steps before it (`ratio`), so the plan's own figure stays readable;
        `images`: the images its networks went through (a feature pass's, a round's trained epochs), and so the
        step's images per second of its whole wall time, what says whether the machine was kept busy."""
        estimate, actual = round(estimate, 1), round(seconds, 1)  # the ratio of the figures shown
        ratio = round(actual / estimate, 2) if estimate > 0 else None
        rate = round(images / seconds, 1) if images and seconds > 0 else None
        row = {"step": step, "estimate": estimate, "actual": actual, "ratio": ratio, "remade": remade}
        self.rows.append({**row, "images": images, "images_per_second": rate})

    def _work(self, kind: str) -> list[dict]:
        """The rows of steps whose names hold `kind` that ran with an estimate, timing the machine left out."""
        return [r for r in self.rows if r["estimate"] > 0 and kind in r["step"] and not r["step"].startswith(TIMING)]

    def timed(self, kind: str = "") -> bool:
        """Whether a step whose name holds `kind` has run with an estimate."""
        return bool(self._work(kind))

    def total_ratio(self, kind: str = "") -> float:
        """What the steps whose names hold `kind` took over the plan's estimates of them in all (1 before any): a
        re-made estimate counts as the plan's figure it was made from, so the factor measures the plan."""
        timed = self._work(kind)
        estimate = sum(r["estimate"] / r["remade"] for r in timed)
        return sum(r["actual"] for r in timed) / estimate if estimate else 1.0

    def ratio(self, kind: str = "") -> float:
        """What the steps so far took over their estimates, within [1, 4] (1 before any): the rest of the plan is
        scaled up by it when the steps overran, never down (a resumed run's cache hits take no time). With `kind`,
        the steps whose names hold it once one has run: a fine-tuning round is foretold best by the rounds before
        it, the same kind of work (training steps on cached activations; monkeys10's rounds took x1.08-1.31 at
        41eda2f while its feature passes took x0.9-1.1)."""
        return min(4.0, max(1.0, self.total_ratio(kind if self.timed(kind) else "")))
