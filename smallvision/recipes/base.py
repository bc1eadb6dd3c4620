"""What every recipe is: a function from a config and a scanned folder to a RecipeOutcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from smallvision.config import RunConfig
from smallvision.data.index import DatasetIndex
from smallvision.models.folder import BackboneCard, HeadCard
from smallvision.results import Decision


@dataclass
class RecipeOutcome:
    """What a recipe hands back: full model state, its description, history and split predictions."""

    state: dict
    backbones: list[BackboneCard]
    head: HeadCard
    history: list[dict]
    best_epoch: int
    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    cache: dict[str, int] = field(default_factory=dict)
    trainable: list[str] = field(default_factory=list)
    world_size: int = 1  # processes that really trained (Lightning's world size); the features path runs one
    image_size: int | None = None  # the input size the model was trained at, when the recipe chose it (auto)
    tta: str | None = None  # test-time augmentation the saved model applies itself ("hflip"), chosen on validation
    # decisions made on validation, by kind (auto's head rates, candidates, rounds, averages, flips); beyond them
    # every recipe keeps its best epoch on validation
    selection: dict[str, int] = field(default_factory=dict)
    resolved: dict | None = None  # config.yaml's resolved values when the run's own config does not hold them (auto)
    # the history stage whose best epoch the saved weights are, when not the last one (a fine-tuning stage that did
    # worse than the head before it): metrics.json's `kept_stage`, so the report marks the right row
    kept_stage: str | None = None
    decisions: list[Decision] = field(default_factory=list)  # what the recipe chose on its own, and why (auto)


@dataclass(frozen=True)
class RunContext:
    """What a recipe runs with: the config, the scanned folder, the run folder, and the run's progress, tracker and
    start time (auto's budget counts from the call's start, not from when the recipe began)."""

    cfg: RunConfig
    index: DatasetIndex
    run_dir: Path
    progress: bool = True
    logger: Any = None
    start: float | None = None


class Recipe(Protocol):
    """A recipe's runner, as recipes/registry.py hands it out: the folder's images trained as the config says."""

    def __call__(self, ctx: RunContext) -> RecipeOutcome: ...
