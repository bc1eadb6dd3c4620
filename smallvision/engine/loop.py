"""The tensor backend: a plain loop over tensors held in memory (a head on cached features, the probe's small CNN).

No Lightning: `import torch, lightning` takes 9-11 s here against 3.6 s for torch alone (measured under load), more
than such a stage trains. Loss and accuracy come from the task, the kept epoch and early stopping from
stage.Keeper, as in the Lightning backend.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

from smallvision.data.loader import target_array
from smallvision.engine.stage import Keeper, StageResult, StageSpec, Tensors, class_weight_tensor
from smallvision.task import SINGLE_LABEL, MultiLabel, SingleLabel


def fit_tensors(
    model,
    data: Tensors,
    spec: StageSpec,
    task: SingleLabel | MultiLabel = SINGLE_LABEL,
    *,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> StageResult:
    """Train `model`'s trainable parameters on in-memory `data.train` for `spec`; keep its best epoch on `data.val`.

    AdamW under one-cycle runs on OneCycleAdamW (no torch.optim import, see head_optim.py); anything else on
    torch.optim with schedules.py, as Lightning stages do. `on_epoch` gets each epoch's history row as it ends (a
    tracker logs it). The best epoch's weights are loaded back.
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    (xt, yt), (xv, yv) = [(torch.as_tensor(x), torch.as_tensor(target_array(y))) for x, y in (data.train, data.val)]
    opt, sched = _optimizer(model, spec, math.ceil(len(xt) / spec.batch_size))
    loss_fn = task.loss_module(
        class_weight_tensor(spec.class_weights, data.train[1], _outputs(model)),
        spec.label_smoothing,
        spec.multilabel_loss,
    )
    step = _Step(model, data.inputs or (lambda x: x), _autocast(spec.precision))
    keeper, history, best_state = Keeper(spec.patience), [], {}
    epochs = range(1, spec.epochs + 1)
    bar = tqdm(epochs, desc=spec.name, unit="epoch") if progress else epochs
    for epoch in bar:
        order = torch.randperm(len(xt), generator=gen)
        train_loss, train_metric = step.train_epoch(xt, yt, order, spec.batch_size, loss_fn, opt, sched, task)
        val_loss, val_metric = step.evaluate(xv, yv, data.eval_batch or max(1, len(xv)), task)
        row = {"epoch": epoch, "train_loss": train_loss, f"train_{task.metric}": train_metric}
        row |= {"val_loss": val_loss, f"val_{task.metric}": val_metric, "images": len(xt), "time": time.time()}
        history.append(row)
        if on_epoch is not None:
            on_epoch(history[-1])
        if progress:
            bar.set_postfix({f"val_{task.metric}": f"{val_metric:.3f}"})
        if keeper.update(epoch, val_metric, val_loss):
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if keeper.should_stop(epoch, spec.epochs):
            break
    model.load_state_dict(best_state)
    model.eval()
    best = keeper.best_epoch
    stopped = len(history) < spec.epochs
    return StageResult(history[best - 1][f"val_{task.metric}"], best, history, 1, stopped, best_state)


def _outputs(model) -> int:
    """How many classes the model scores: its last linear layer's outputs."""
    import torch

    return int([m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features)


def _autocast(precision: str) -> Callable:
    """A context for the forward pass at `precision` (mixed precision on the CPU, where these loops run)."""
    import torch

    from smallvision.engine.precision import autocast_dtype, resolve_precision

    dtype = autocast_dtype(resolve_precision(precision))
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast("cpu", dtype=dtype)


def _optimizer(model, spec: StageSpec, steps_per_epoch: int) -> tuple:
    """The optimizer over the model's trainable parameters and its per-step scheduler (None for one-cycle AdamW,
    which schedules itself without importing torch.optim)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "adamw" and spec.schedule == "onecycle":
        from smallvision.engine.head_optim import OneCycleAdamW

        total = spec.epochs * steps_per_epoch
        return OneCycleAdamW(params, spec.lr, total, weight_decay=spec.weight_decay, pct_start=spec.pct_start), None
    from smallvision.engine.schedules import make_optimizer, make_scheduler

    opt = make_optimizer(spec.optimizer, [{"params": params, "lr": spec.lr}], spec.weight_decay, spec.momentum)
    sched = make_scheduler(opt, spec.schedule, spec.epochs, steps_per_epoch, spec.warmup_epochs, spec.pct_start)
    return opt, sched


class _Step:
    """One epoch of training and one validation pass of a model over tensors, inputs mapped and autocast."""

    def __init__(self, model, inputs: Callable, cast: Callable) -> None:
        self.model, self.inputs, self.cast = model, inputs, cast

    def train_epoch(self, xt, yt, order, batch_size: int, loss_fn, opt, sched, task) -> tuple[float, float]:
        """One epoch over the rows in `order`: the mean training loss and the task's metric (accuracy summed per
        batch; a ranking metric such as mAP over the epoch's logits)."""
        import torch

        self.model.train()
        total, correct, n, outputs = 0.0, 0, 0, []
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            with self.cast():
                logits = self.model(self.inputs(xt[idx])).float()
            loss = loss_fn(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item() * len(idx)
            if task.per_batch:
                correct += int(task.correct(logits, yt[idx]).sum())
            else:
                outputs.append(logits.detach())
            n += len(idx)
        return total / n, correct / n if task.per_batch else task.metric_of(torch.cat(outputs), yt[order])

    def evaluate(self, xv, yv, batch: int, task) -> tuple[float, float]:
        """Validation loss (the task's plain loss) and metric over all rows, in float32 as Lightning logs them (a
        head's accuracy is compared with a fine-tuned stage's: equal counts must be equal numbers)."""
        import torch

        self.model.eval()
        with torch.inference_mode(), self.cast():
            logits = torch.cat([self.model(self.inputs(xv[s : s + batch])).float() for s in range(0, len(xv), batch)])
        return float(task.loss(logits, yv)), task.metric_of(logits, yv)
