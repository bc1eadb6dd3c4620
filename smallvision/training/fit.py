"""Run one training stage with Lightning: checkpoints (best + last), early stopping, resume, DDP, precision."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smallvision import atomic
from smallvision.config import RunConfig
from smallvision.training.distributed import world_devices

log = logging.getLogger(__name__)


def resolve_precision(precision: str) -> str:
    """'auto': bf16-mixed on a GPU that has it or a CPU with native bf16 (measured here, batch 32: small_cnn steps
    0.42-0.45 -> 0.20 s, lite0 top-block steps 0.55-0.63 -> 0.22-0.23 s), 16-mixed on older GPUs, else 32-true."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    from smallvision.models.inference import native_bf16

    return "bf16-mixed" if native_bf16() else "32-true"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype Lightning's mixed precision autocasts to for a resolved `precision` (None: full precision)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


@dataclass
class StageResult:
    """A finished stage: best validation accuracy, its epoch, the per-epoch history, and how many processes trained."""

    best_accuracy: float
    best_epoch: int
    history: list[dict]
    world_size: int = 1


def run_stage(
    name: str,
    model: torch.nn.Module,
    groups: list[dict],
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: RunConfig,
    epochs: int,
    stage_dir: Path,
    progress: bool,
    views=None,
    logger=None,
    max_seconds: float | None = None,
) -> StageResult:
    """Train `model` (its trainable groups at their lrs) for one stage; load the best weights back into it.

    A stage that finished before (its done.json exists) is not run again: its best weights are loaded. One that was
    interrupted resumes from its last checkpoint. With `views` (an ActivationViews) the stage trains on cached
    boundary activations instead of images. `logger` (a Lightning logger) gets each epoch's row as it ends.
    `max_seconds` stops training when that much time has passed (Lightning's max_time; auto's budget guard).
    """
    from smallvision.training.features import class_weight_tensor
    from smallvision.training.module import ClassifierModule, History

    _quiet_lightning()
    stage_dir = Path(stage_dir)
    trained = views.model if views is not None else model
    finished = _finished(name, trained, stage_dir)
    if finished is not None:
        return finished
    r = cfg.recipe
    train_ds, train_dl, val_dl = _loaders(cfg, data, views)
    devices = world_devices(cfg)
    steps = max(1, int(np.ceil(len(train_ds.labels) / (r.batch_size * devices))))
    weights = class_weight_tensor(r.class_weights, data["train"][1], int(model.head.layers[-1].out_features))
    trained.train()  # Lightning keeps modules' modes as found; this sets them once (frozen parts stay in eval)
    module = ClassifierModule(trained, r, groups, epochs, steps, weights)
    history = History(name, logger)
    trainer, ckpt = _trainer(cfg, name, stage_dir, epochs, devices, progress, max_seconds, history)
    last = stage_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    if resume:
        log.info("stage %s: resuming from %s", name, last)
    trainer.fit(module, train_dl, val_dl, ckpt_path=resume)
    trainer.strategy.barrier()
    _load_weights(trained, Path(ckpt.best_model_path or stage_dir / "best.ckpt"))
    rows = history.rows
    best = max(rows, key=lambda row: row["val_accuracy"]) if rows else {"val_accuracy": float("nan"), "epoch": 0}
    result = StageResult(best["val_accuracy"], best["epoch"], rows, trainer.world_size)
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


def _loaders(cfg: RunConfig, data: dict, views) -> tuple:
    """The stage's training set and its train and val loaders: cached activation views, or decoded images."""
    from smallvision.data.loader import CachedImages, make_loader
    from smallvision.data.transforms import eval_transform, train_transform

    r = cfg.recipe
    if views is not None:
        train_ds, val_ds, sampler = views.datasets(cfg.seed)
        train_dl = make_loader(train_ds, r.batch_size, shuffle=True, workers=0, seed=cfg.seed, sampler=sampler)
        return train_ds, train_dl, make_loader(val_ds, max(r.batch_size, 64), shuffle=False, workers=0, seed=cfg.seed)
    workers = cfg.trainer.workers
    train_ds = CachedImages(*data["train"], train_transform(r.augment, cfg.data.image_size))
    val_ds = CachedImages(*data["val"], eval_transform())
    train_dl = make_loader(train_ds, r.batch_size, shuffle=True, workers=workers, seed=cfg.seed)
    return train_ds, train_dl, make_loader(val_ds, max(r.batch_size, 64), shuffle=False, workers=workers, seed=cfg.seed)


def _trainer(
    cfg: RunConfig, name: str, stage_dir: Path, epochs: int, devices: int, progress: bool, max_seconds, history
):
    """Lightning's Trainer for one stage and its best-epoch checkpoint: early stopping, the stage's bar, DDP."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from smallvision.training.module import RngState, StageBar

    ckpt = ModelCheckpoint(
        dirpath=stage_dir,
        filename="best",
        monitor="val_accuracy",
        mode="max",
        save_last=True,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [history, RngState(), ckpt]
    if cfg.recipe.patience:
        patience = cfg.recipe.patience
        callbacks.append(EarlyStopping("val_accuracy", mode="max", patience=patience, check_on_train_epoch_end=True))
    if progress:  # tqdm like every other bar (widgets in a notebook); with rich installed Lightning would pick Rich
        callbacks.append(StageBar(name))
    trainer = L.Trainer(
        max_epochs=epochs,
        max_time={"seconds": max(1.0, max_seconds)} if max_seconds is not None else None,
        accelerator="auto",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=resolve_precision(cfg.trainer.precision),
        default_root_dir=stage_dir,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    return trainer, ckpt


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
