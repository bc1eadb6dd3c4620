"""Learning-rate schedules, stepped once per batch: constant, ramp-then-decay, time-based decay, cosine, one-cycle."""

from __future__ import annotations

import math

import torch


def make_optimizer(name: str, groups: list[dict], weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """One of adam, adamw, sgd (momentum), rmsprop over parameter groups that carry their own lr."""
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 1.0,
    pct_start: float = 0.25,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler; each parameter group keeps its own peak rate (discriminative rates survive).

    `pct_start` is the rising share of `onecycle` (0.25 end to end; the head on cached features uses 0.1, the
    share its OneCycleAdamW was tuned with).
    """
    total = max(1, epochs * steps_per_epoch)
    warm = min(total - 1, int(warmup_epochs * steps_per_epoch)) if warmup_epochs else 0
    if kind == "onecycle":
        peaks = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=pct_start)

    def ramp(step: int) -> float:
        return (step + 1) / (warm + 1) if step < warm else 1.0

    if kind == "constant":
        factor = lambda step: 1.0  # noqa: E731
    elif kind == "ramp":
        # the full rate for the first `warmup_epochs`, then exponential decay to 1% at the end (Keras' classic)
        factor = lambda step: 1.0 if step < warm else 0.01 ** ((step - warm) / max(1, total - warm))  # noqa: E731
    elif kind == "time":
        # Keras' time-based decay: lr / (1 + decay * epoch), decay chosen so the last epoch runs at a tenth
        decay = 9.0 / max(1, epochs)
        factor = lambda step: 1.0 / (1.0 + decay * step / steps_per_epoch)  # noqa: E731
    elif kind == "cosine":
        factor = lambda step: (  # noqa: E731
            ramp(step) if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        )
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
