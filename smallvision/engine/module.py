"""The Lightning pieces of an end-to-end stage: the module (the task's loss and metric, parameter groups, schedule),
its history, best-epoch keeping, progress bar and random states."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from torch import nn

from smallvision.engine.schedules import make_optimizer, make_scheduler
from smallvision.engine.stage import Keeper, StageSpec
from smallvision.task import SINGLE_LABEL, MultiLabel, SingleLabel

log = logging.getLogger(__name__)


class ClassifierModule(L.LightningModule):
    """The task's loss and accuracy on an ImageClassifier, with per-group learning rates and a per-step schedule."""

    def __init__(
        self,
        model: nn.Module,
        spec: StageSpec,
        groups: list[dict],
        steps_per_epoch: int,
        class_weights: torch.Tensor | None = None,
        task: SingleLabel | MultiLabel = SINGLE_LABEL,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.groups = groups
        self.steps_per_epoch = steps_per_epoch
        self.task = task
        self.loss_fn = task.loss_module(class_weights, spec.label_smoothing, spec.multilabel_loss)
        self.outputs: dict[str, list] = {"train": [], "val": []}  # a ranking metric's epoch of logits and targets
        self.trained_images = 0  # this process's, so History can say how many each epoch trained on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        loss = self.loss_fn(logits.float(), y)
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=len(y),
        )
        if self.task.per_batch:
            acc = self.task.correct(logits, y).float().mean()
            self.log(
                f"{stage}_accuracy", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(y)
            )
        else:
            self.outputs[stage].append((logits.detach().float(), y))
        return loss

    def on_validation_epoch_end(self) -> None:
        """A ranking metric (mAP) over the epoch's train and val logits, gathered from every process; logged here,
        before the callbacks read the epoch's metrics (Lightning validates before the train epoch ends)."""
        for stage, kept in self.outputs.items():
            if not kept:
                continue
            logits, y = (self.all_gather(torch.cat(parts)) for parts in zip(*kept, strict=True))
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1, y.shape[-1])
            self.log(f"{stage}_{self.task.metric}", self.task.metric_of(logits, y), prog_bar=True)
            kept.clear()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss."""
        self.trained_images += len(batch[1])
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        """Validation loss and accuracy (epoch means)."""
        self._step(batch, "val")

    def configure_optimizers(self):
        """The optimizer over the trainable groups and a scheduler stepped every batch."""
        s = self.spec
        opt = make_optimizer(s.optimizer, self.groups, s.weight_decay, s.momentum)
        sched = make_scheduler(opt, s.schedule, s.epochs, self.steps_per_epoch, s.warmup_epochs, s.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class History(L.Callback):
    """Per-epoch train/val loss and accuracy, the images trained on and the Unix time the epoch ended; kept in
    checkpoints for resumes.

    `on_epoch` (a tracker's logging, say) gets each row as it is recorded, on rank zero.
    """

    def __init__(self, stage: str, on_epoch: Callable[[dict], None] | None = None, metric: str = "accuracy") -> None:
        self.stage = stage
        self.on_epoch = on_epoch
        self.metric = metric
        self.rows: list[dict] = []
        self.started = 0  # the module's trained_images when the epoch began

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Note how many images the module had trained on, so the epoch's own count can be recorded."""
        self.started = pl_module.trained_images

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch's metrics once validation has run."""
        m = trainer.callback_metrics
        if f"val_{self.metric}" not in m:
            return
        row = {"stage": self.stage, "epoch": trainer.current_epoch + 1}
        for key in ("train_loss", f"train_{self.metric}", "val_loss", f"val_{self.metric}"):
            row[key] = float(m[key]) if key in m else float("nan")
        row["images"] = (pl_module.trained_images - self.started) * trainer.world_size  # a clock-cut epoch: fewer
        row["time"] = time.time()
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero and self.on_epoch is not None:
            self.on_epoch(row)

    def state_dict(self) -> dict:
        """Rows for the checkpoint."""
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        """Rows from a checkpoint (on resume)."""
        self.rows = list(state_dict.get("rows", []))


class KeepBest(L.Callback):
    """stage.Keeper on Lightning: `path` (best.ckpt) is written when an epoch is the new best, and the fit stops early
    when the keeper says so. On a resume the keeper replays the checkpointed history's rows (`history`), so what it
    kept is derived, never stored beside them (a checkpoint of an earlier version resumes the same way)."""

    def __init__(self, keeper: Keeper, path: Path, history: History) -> None:
        self.keeper, self.path, self.history, self.stopped = keeper, path, history, False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Replay the epochs a resumed stage had already validated."""
        key = f"val_{self.history.metric}"
        for row in sorted(self.history.rows, key=lambda r: r["epoch"]):
            self.keeper.update(row["epoch"], row[key], row["val_loss"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the epoch if it is the best so far; stop when validation stopped rising for the patience."""
        m, key = trainer.callback_metrics, f"val_{self.history.metric}"
        if key not in m:
            return
        epoch = trainer.current_epoch + 1
        if self.keeper.update(epoch, float(m[key]), float(m["val_loss"])):
            trainer.save_checkpoint(self.path)
        if self.keeper.should_stop(epoch, trainer.max_epochs):
            trainer.should_stop, self.stopped = True, True


class StageBar(TQDMProgressBar):
    """Lightning's tqdm bar (notebook widgets through tqdm.auto when ipywidgets is installed), named after the stage.

    One bar for the stage, reset each epoch, with the validation metrics as its postfix; no separate validation bar
    (in a notebook each would stay behind as one more output per epoch).
    """

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def init_validation_tqdm(self) -> Tqdm:
        """A disabled bar: validation shows in the training bar's postfix."""
        return Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        """Name the bar `<stage> epoch N/M`."""
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class RngState(L.Callback):
    """Random-number-generator states in every checkpoint, so augmentation after a resume matches an unbroken run.

    Stored as tensors and plain values only, so checkpoints still load with torch.load(weights_only=True). With a GPU
    the training device's CUDA generator is kept too (the current device: Lightning sets it to the training device;
    reading every GPU's state would open a CUDA context on each from one rank), so a GPU resume draws what an
    unbroken run would.
    """

    def state_dict(self) -> dict:
        """The torch (CPU and the current CUDA device), numpy and Python generator states now."""
        import random

        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), py_gauss],
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the generator states of the checkpoint."""
        import random

        import numpy as np

        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, py_gauss = state_dict["python"]
        random.setstate((version, tuple(internal), py_gauss))
        cuda = state_dict.get("cuda")
        if cuda is None:
            return
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda)
        else:
            log.warning(
                "the checkpoint holds a CUDA generator state but no GPU is visible: GPU randomness is not restored, "
                "so this resume is not the run it continues"
            )
