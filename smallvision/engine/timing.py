"""How long a training stage will take, from steps timed as training runs them (auto's costs, the plan)."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from smallvision.config import RunConfig
from smallvision.task import SINGLE_LABEL


def estimate_stage_seconds(model, data, cfg: RunConfig, views=None, warmup: int = 2, timed: int = 3) -> dict:
    """Seconds the fine-tuning stage would take, from training steps timed as training runs them.

    On the training device at the training precision (the same autocast), after `warmup` untimed steps (the first
    ones pay for allocation and kernel selection); the median of `timed` steps and of validation batches, scaled to
    the planned epochs and this run's processes. The global RNG is left as found, so timing never changes the model.
    """
    from smallvision.engine.distributed import world_devices
    from smallvision.engine.precision import resolve_precision
    from smallvision.models.inference import inference_device

    r = cfg.recipe
    precision = resolve_precision(cfg.trainer.precision)
    device = inference_device()
    model = views.model if views is not None else model
    x, y = _batch(data, r.batch_size, views, device)
    step, val = _step_seconds(model, x, y, precision, device, warmup, timed)
    n_train, n_val = len(data["train"][1]), len(data["val"][1])
    per_epoch = (step * n_train / len(y) + val * n_val / len(y)) / world_devices(cfg)
    return {
        "seconds": per_epoch * r.finetune_epochs,
        "step_seconds": round(step, 4),
        "val_batch_seconds": round(val, 4),
        "batch": len(y),
        "device": str(device),
        "precision": precision,
        "warmup_steps": warmup,
        "timed_steps": timed,
    }


def _batch(data, batch_size: int, views, device) -> tuple:
    """One training batch as the stage feeds it: cached activations, or images scaled to [0, 1] (channels last)."""
    import torch

    if views is not None:
        x = views.train[0][:batch_size].float()
    else:
        images = np.ascontiguousarray(data["train"][0][:batch_size])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(data["train"][1][:batch_size]).to(device)
    return (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x).to(device), y


def _step_seconds(model, x, y, precision: str, device, warmup: int, timed: int) -> tuple[float, float]:
    """Median seconds of a training step and of a validation batch on `device` at `precision`."""
    import torch

    from smallvision.engine.precision import autocast_dtype

    dtype = autocast_dtype(precision)

    def clock(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    def cast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def train_step() -> None:
        with cast():
            loss = SINGLE_LABEL.loss(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def val_step() -> None:
        with torch.inference_mode(), cast():
            model(x)

    cuda = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        model.to(device)
        try:
            model.train()
            steps = [clock(train_step) for _ in range(warmup + timed)][warmup:]
            model.eval()
            vals = [clock(val_step) for _ in range(1 + timed)][1:]
        finally:
            model.to("cpu")
            model.zero_grad(set_to_none=True)
    return float(np.median(steps)), float(np.median(vals))
