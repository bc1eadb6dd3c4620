"""The Lightning backend: one end-to-end stage with checkpoints (best + last), early stopping, resume, DDP and
precision; the kept epoch and early stopping are stage.Keeper's, as in the tensor loop."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from smallvision import atomic
from smallvision.engine.precision import resolve_precision
from smallvision.engine.stage import ImageData, Keeper, StageResult, StageSpec, class_weight_tensor
from smallvision.task import SINGLE_LABEL, MultiLabel, SingleLabel

log = logging.getLogger(__name__)


def fit_lightning(
    model: torch.nn.Module,
    data: ImageData,
    spec: StageSpec,
    task: SingleLabel | MultiLabel = SINGLE_LABEL,
    *,
    groups: list[dict],
    stage_dir: Path,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> StageResult:
    """Train `model` (its trainable `groups` at their rates) for one stage; load the best epoch's weights back.

    A stage that finished before (its done.json exists) is not run again: its best weights are loaded. One that was
    interrupted resumes from its last checkpoint. With `data.views` (an ActivationViews) the stage trains on cached
    boundary activations instead of images. `on_epoch` gets each epoch's history row as it ends (rank zero).
    """
    from smallvision.engine.module import ClassifierModule, History, KeepBest

    _quiet_lightning()
    stage_dir = Path(stage_dir)
    trained = data.views.model if data.views is not None else model
    finished = _finished(spec.name, trained, stage_dir)
    if finished is not None:
        return finished
    train_ds, train_dl, val_dl = _loaders(data, spec)
    steps = max(1, int(np.ceil(len(train_ds.labels) / (spec.batch_size * spec.devices))))
    weights = class_weight_tensor(spec.class_weights, data.arrays["train"][1], int(model.head.layers[-1].out_features))
    trained.train()  # Lightning keeps modules' modes as found; this sets them once (frozen parts stay in eval)
    module = ClassifierModule(trained, spec, groups, steps, weights, task)
    history = History(spec.name, on_epoch, task.metric)
    keep = KeepBest(Keeper(spec.patience), stage_dir / "best.ckpt", history)
    trainer = _trainer(spec, stage_dir, progress, [history, keep])
    last = stage_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    if resume:
        log.info("stage %s: resuming from %s", spec.name, last)
    trainer.fit(module, train_dl, val_dl, ckpt_path=resume)
    trainer.strategy.barrier()
    _load_weights(trained, stage_dir / "best.ckpt")
    rows = history.rows
    best = next((row for row in rows if row["epoch"] == keep.keeper.best_epoch), None)
    key = f"val_{task.metric}"
    best = best or {key: float("nan"), "epoch": 0}
    stopped = len(rows) < spec.epochs and keep.stopped
    result = StageResult(best[key], best["epoch"], rows, trainer.world_size, stopped)
    if trainer.is_global_zero:
        done = {"best_accuracy": result.best_accuracy, "best_epoch": result.best_epoch, "history": rows}
        atomic.write_json(stage_dir / "done.json", {**done, "world_size": result.world_size})
    return result


def _quiet_lightning() -> None:
    """Lightning's info lines and the warnings that say nothing about a smallvision stage stay off the terminal."""
    for noisy in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _finished(name: str, trained: torch.nn.Module, stage_dir: Path) -> StageResult | None:
    """A stage that finished before (done.json and its best weights): its result, with those weights loaded."""
    done_path, best_path = stage_dir / "done.json", stage_dir / "best.ckpt"
    if not (done_path.exists() and best_path.exists()):
        return None
    done = json.loads(done_path.read_text())
    _load_weights(trained, best_path)
    log.info("stage %s already finished (best val accuracy %.4f); reusing it", name, done["best_accuracy"])
    return StageResult(done["best_accuracy"], done["best_epoch"], done["history"], done.get("world_size", 1))


def _loaders(data: ImageData, spec: StageSpec) -> tuple:
    """The stage's training set and its train and val loaders: cached activation views, or decoded images."""
    from smallvision.data.loader import CachedImages, make_loader
    from smallvision.data.transforms import eval_transform

    val_batch = max(spec.batch_size, 64)
    if data.views is not None:
        train_ds, val_ds, sampler = data.views.datasets(spec.seed)
        train_dl = make_loader(train_ds, spec.batch_size, shuffle=True, workers=0, seed=spec.seed, sampler=sampler)
        return train_ds, train_dl, make_loader(val_ds, val_batch, shuffle=False, workers=0, seed=spec.seed)
    train_ds = CachedImages(*data.arrays["train"], data.transform or eval_transform())
    val_ds = CachedImages(*data.arrays["val"], eval_transform())
    train_dl = make_loader(train_ds, spec.batch_size, shuffle=True, workers=data.workers, seed=spec.seed)
    return train_ds, train_dl, make_loader(val_ds, val_batch, shuffle=False, workers=data.workers, seed=spec.seed)


def _trainer(spec: StageSpec, stage_dir: Path, progress: bool, callbacks: list):
    """Lightning's Trainer for one stage: the last-epoch checkpoint (for resuming), the stage's bar, DDP."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from smallvision.engine.module import RngState, StageBar

    # last.ckpt, every epoch (the newest one replaces the one before): what an interrupted stage resumes from
    last = ModelCheckpoint(
        dirpath=stage_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [*callbacks, RngState(), last]
    if progress:  # tqdm like every other bar (widgets in a notebook); with rich installed Lightning would pick Rich
        callbacks.append(StageBar(spec.name))
    return L.Trainer(
        max_epochs=spec.epochs,
        max_time={"seconds": max(1.0, spec.max_seconds)} if spec.max_seconds is not None else None,
        accelerator="auto",
        devices=spec.devices,
        strategy="ddp" if spec.devices > 1 else "auto",
        precision=resolve_precision(spec.precision),
        default_root_dir=stage_dir,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )


def _load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Load a Lightning checkpoint's model weights (tensors only: weights_only=True, so no code runs)."""
    import pickle

    from smallvision.errors import SmallvisionError

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as e:
        raise SmallvisionError(
            f"{ckpt}: refused or unreadable checkpoint ({type(e).__name__}); smallvision loads checkpoints as "
            "tensors only. Delete the file to retrain that stage"
        ) from e
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
