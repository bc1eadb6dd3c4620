"""Test-only: `smallvision train` under torchrun, with each rank recording what it trained on.

Run as `python -m torch.distributed.run --nproc_per_node=2 tests/ddp_probe.py train DATA ...` with DDP_PROBE_DIR
set. Nothing in the training changes: the probe only wraps smallvision's own dataset and LightningModule methods to
write, per rank, into DDP_PROBE_DIR/rank<R>.pt: every training-sample index the rank's loader drew, the model's weights
when training started, the rank's first batch, and every gradient just before the first optimizer step (after DDP's
all-reduce).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from smallvision.cli import app
from smallvision.data.loader import CachedImages
from smallvision.engine.module import ClassifierModule

RANK = int(os.environ["RANK"])
OUT = Path(os.environ["DDP_PROBE_DIR"])
record: dict = {"indices": {}, "rank": RANK, "world_size": int(os.environ["WORLD_SIZE"])}


def _save() -> None:
    torch.save(record, OUT / f"rank{RANK}.pt")


_getitem = CachedImages.__getitem__


def _recording_getitem(self: CachedImages, i: int):
    record["indices"].setdefault(len(self), []).append(int(i))
    return _getitem(self, i)


_training_step = ClassifierModule.training_step


def _recording_training_step(self: ClassifierModule, batch, batch_idx: int):
    if "batch" not in record:
        record["start"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        record["batch"] = [t.detach().clone() for t in batch]
    return _training_step(self, batch, batch_idx)


def _recording_before_optimizer_step(self: ClassifierModule, optimizer) -> None:
    if "grads" not in record:
        record["grads"] = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


def _recording_train_end(self: ClassifierModule) -> None:
    _save()


CachedImages.__getitem__ = _recording_getitem
ClassifierModule.training_step = _recording_training_step
ClassifierModule.on_before_optimizer_step = _recording_before_optimizer_step
ClassifierModule.on_train_end = _recording_train_end

if __name__ == "__main__":
    app()
