"""`fit`: one training stage on the backend its data needs, with one loss, metric, kept epoch and early stopping.

In-memory tensors (a head on cached features, the probe's small CNN) train on the plain loop (engine/loop.py: no
Lightning import, which costs more than such a stage); decoded images or cached activations train on Lightning
(engine/lightning.py: checkpoints, resume, DDP, precision). Both take the loss and accuracy from the task and keep
their best epoch and stop early by stage.Keeper.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from smallvision.engine.stage import ImageData, StageResult, StageSpec, Tensors
from smallvision.task import SINGLE_LABEL, MultiLabel, SingleLabel


def fit(
    model,
    data: Tensors | ImageData,
    spec: StageSpec,
    task: SingleLabel | MultiLabel = SINGLE_LABEL,
    *,
    groups: list[dict] | None = None,
    stage_dir: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> StageResult:
    """Train one stage of `model` as `spec` says and load its best epoch back; `groups` (parameter groups at their
    own rates) and `stage_dir` (checkpoints, for resuming) belong to end-to-end stages on ImageData."""
    if isinstance(data, Tensors):
        if groups is not None or stage_dir is not None or spec.max_seconds is not None or spec.devices > 1:
            raise ValueError(
                "the tensor loop trains the model's trainable parameters at spec.lr in one process, uncheckpointed "
                "and unclocked: no groups, stage_dir, max_seconds or devices"
            )
        from smallvision.engine.loop import fit_tensors

        return fit_tensors(model, data, spec, task, progress=progress, on_epoch=on_epoch)
    if groups is None or stage_dir is None:
        raise ValueError("an end-to-end stage needs its parameter groups and a stage folder")
    from smallvision.engine.lightning import fit_lightning

    return fit_lightning(
        model, data, spec, task, groups=groups, stage_dir=stage_dir, progress=progress, on_epoch=on_epoch
    )
