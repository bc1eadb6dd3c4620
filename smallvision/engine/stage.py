"""One training stage as both backends see it: what it runs with (`StageSpec`, the one map from config to optimizer,
schedule, early stopping and precision), what it hands back (`StageResult`), and the rule that keeps its best epoch
and stops it early (`Keeper`), written once for the tensor loop and Lightning alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from smallvision.config import RunConfig
from smallvision.engine.distributed import world_devices

HEAD_PCT_START = 0.1  # one-cycle's rising share on the head (OneCycleAdamW's, whatever the optimizer)
NETWORK_PCT_START = 0.25  # and end to end (make_scheduler's default)


@dataclass(frozen=True)
class StageSpec:
    """How one stage trains: its name in history.csv, length, optimizer and schedule, loss options, early stopping,
    seed and precision. `lr` is the rate of a stage that trains one group (a head); an end-to-end stage's groups carry
    their own rates."""

    name: str
    epochs: int
    lr: float
    batch_size: int
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    multilabel_loss: str = "bce"  # a multi-label stage's loss (bce or asl); single-label stages use cross-entropy
    class_weights: str = "none"
    patience: int | None = None
    seed: int = 0
    precision: str = "32-true"  # as configured ("auto" resolved by each backend: see engine/precision.py)
    pct_start: float = NETWORK_PCT_START
    max_seconds: float | None = None  # stop training when this much time has passed (auto's budget guard)
    devices: int = 1  # processes per node (DDP above one)


def stage_spec(
    cfg: RunConfig,
    name: str,
    path: Literal["head", "network"],
    epochs: int | None = None,
    max_seconds: float | None = None,
) -> StageSpec:
    """The spec of stage `name` on schedule path `path` ("head" on cached features, "network" end to end) as the
    run's config says; `epochs` defaults to the recipe's first-stage epochs."""
    r = cfg.recipe
    return StageSpec(
        name=name,
        epochs=r.epochs if epochs is None else epochs,
        lr=r.lr,
        batch_size=r.batch_size,
        optimizer=r.optimizer,
        schedule=r.schedule_for(path),
        momentum=r.momentum,
        warmup_epochs=r.warmup_epochs,
        weight_decay=r.weight_decay,
        label_smoothing=r.label_smoothing,
        multilabel_loss=r.loss or "bce",
        class_weights=r.class_weights,
        patience=r.patience,
        seed=cfg.seed,
        precision="32-true" if path == "head" else cfg.trainer.precision,  # a head on cached features: fp32, as ever
        pct_start=HEAD_PCT_START if path == "head" else NETWORK_PCT_START,
        max_seconds=max_seconds,
        devices=1 if path == "head" else world_devices(cfg),
    )


@dataclass
class ImageData:
    """What an end-to-end stage trains on: each split's decoded (uint8 NHWC images, labels), the training transform
    (none: the plain one evaluation uses) and the loader workers; or, with `views` (an ActivationViews), cached
    boundary activations."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    transform: object = None
    workers: int = 0
    views: object = None


@dataclass
class Tensors:
    """What the tensor loop trains on: in-memory (inputs, labels) for train and val; `inputs` maps a batch of stored
    rows to the model's input (none: they are the input), `eval_batch` splits validation (none: all rows at once)."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    inputs: object = None
    eval_batch: int | None = None


@dataclass
class StageResult:
    """A finished stage: best validation accuracy, its epoch, the per-epoch history, how many processes trained,
    whether early stopping ended it, and (tensor loop) the best epoch's weights."""

    best_accuracy: float
    best_epoch: int
    history: list[dict]
    world_size: int = 1
    stopped_early: bool = False
    state: dict = field(default_factory=dict)


@dataclass
class Keeper:
    """Best-epoch keeping and early stopping. The kept epoch is the best on validation accuracy, ties broken by the
    lower validation loss (small validation splits tie often); early stopping watches accuracy alone, as Lightning's
    EarlyStopping does: it stops after `patience` epochs without a higher accuracy, never on the last epoch."""

    patience: int | None = None
    best: tuple[float, float] = (-1.0, math.inf)
    best_epoch: int = 0
    top: float = -1.0
    top_epoch: int = 0

    def update(self, epoch: int, accuracy: float, loss: float) -> bool:
        """Record an epoch's validation numbers; True when it is the new best epoch."""
        if accuracy > self.top:
            self.top, self.top_epoch = accuracy, epoch
        if (accuracy, -loss) > (self.best[0], -self.best[1]):
            self.best, self.best_epoch = (accuracy, loss), epoch
            return True
        return False

    def should_stop(self, epoch: int, epochs: int) -> bool:
        """Whether early stopping ends the stage after `epoch` of `epochs`."""
        return self.patience is not None and epoch - self.top_epoch >= self.patience and epoch < epochs


def class_weight_tensor(kind: str, labels: np.ndarray, num_classes: int):
    """Per-class loss weights: None for 'none'; 'balanced' as scikit-learn computes it (absent classes weigh 1). For
    multi-label targets (rows of 0/1) 'balanced' is each label's positive weight: its negatives over its positives,
    as BCEWithLogitsLoss's pos_weight documents (a label with no positive weighs 1)."""
    import torch

    if kind == "none":
        return None
    if kind != "balanced":
        raise ValueError(f"unknown class_weights {kind!r}")
    if np.ndim(labels) == 2:
        pos = np.asarray(labels, dtype=np.float64).sum(0)
        w = np.where(pos > 0, (len(labels) - pos) / np.maximum(pos, 1), 1.0)
        return torch.tensor(w, dtype=torch.float32)
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = np.ones(num_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(w)
