"""`finetune` and `unfreeze`: a head on cached features, then the top blocks (or everything) at a lower rate."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path

from smallvision.config import RunConfig
from smallvision.data.index import DatasetIndex
from smallvision.recipes.base import RecipeOutcome, RunContext
from smallvision.recipes.steps import (
    activation_views,
    cache_counts,
    epoch_logger,
    feature_probs,
    feature_stage,
    finish,
    frozen_summary,
    image_data,
    load_images,
    param_groups,
    pretrained_model,
)
from smallvision.task import METRIC_NAMES

log = logging.getLogger(__name__)


def _two_stage(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool, whole: bool, logger
) -> RecipeOutcome:
    """Stage 1: head on cached features. Stage 2: unfreeze the top blocks (or everything) at a lower lr."""
    import lightning as L

    from smallvision.engine.stage import stage_spec
    from smallvision.engine.trainer import fit
    from smallvision.models.backbone import freeze

    notes: list[str] = []
    r = cfg.recipe
    tap = _tap(cfg, whole)
    fs = feature_stage(cfg, index, progress, notes, logger, tap=tap)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_images(cfg, index, progress)
    model = pretrained_model(cfg, fs.specs, len(index.classes), head=fs.head, task=fs.task)
    trainable = {}
    for i, b in enumerate(model.backbones):
        trainable[i] = freeze(b, None) if whole else freeze(b, r.unfreeze_blocks, r.unfreeze_from)
    what = "the whole backbone trains" if whole else f"blocks {', '.join(trainable[0])} train"
    stage = "unfreeze" if whole else "finetune"
    notes.append(
        f"stage {stage}: {what} at lr {r.finetune_lr:g} (lower groups x{r.layer_decay} each), the head at lr "
        f"{r.lr:g}; {frozen_summary(model)}"
    )
    history = list(fs.history)

    features_state = copy.deepcopy(model.state_dict())
    views = activation_views(cfg, model, data, notes, progress, tap, index)
    if tap is not None:
        tap.release()
    groups = param_groups(model, trainable, r.lr, r.finetune_lr, r.layer_decay)
    spec = stage_spec(cfg, stage, "network", epochs=r.finetune_epochs)
    res = fit(
        model,
        image_data(cfg, data, views),
        spec,
        fs.task,
        groups=groups,
        stage_dir=run_dir / "checkpoints" / stage,
        progress=progress,
        on_epoch=epoch_logger(logger),
    )
    history += res.history
    notes.append(
        f"stage {stage}: best epoch {res.best_epoch} of {r.finetune_epochs} "
        f"(val {METRIC_NAMES[fs.task.metric]} {res.best_accuracy:.4f})"
    )
    if res.best_accuracy < fs.best_accuracy:
        return _stage_one_kept(cfg, model, features_state, fs, data, history, notes, (stage, res))
    trained = ["head"] + [f"backbones.{i}.{n}" for i, names in trainable.items() for n in names]
    probs = views.probabilities(fs.task) if views is not None else None
    outcome = finish(model, cfg, data, fs.specs, history, res.best_epoch, notes, trained, cache_counts(fs), probs)
    return replace(outcome, world_size=res.world_size)


def _tap(cfg: RunConfig, whole: bool):
    """What the feature pass keeps for stage 2 (caching/taps.py): the activations below the top --unfreeze-blocks
    groups, the cut being known before the pass; None when stage 2 cuts elsewhere or caches nothing."""
    from smallvision.caching.taps import BoundaryTap, memory_bytes

    r = cfg.recipe
    if whole or r.unfreeze_from is not None or r.cached_views == 0:
        return None
    return BoundaryTap(frozenset({cfg.model.backbone}), r.unfreeze_blocks, cfg.data.image_size, memory_bytes(cfg))


def _stage_one_kept(cfg: RunConfig, model, features_state: dict, fs, data, history, notes, ran) -> RecipeOutcome:
    """The outcome when fine-tuning did worse on validation than the head before it: stage 1's weights, with the
    history of both stages and the kept stage named (metrics.json's kept_stage)."""
    from smallvision.models.backbone import freeze

    stage, res = ran
    model.load_state_dict(features_state)
    notes.append(
        f"{cfg.recipe.name}: kept the stage-1 (features) model: val {METRIC_NAMES[fs.task.metric]} "
        f"{fs.best_accuracy:.4f}; "
        f"{stage} reached {res.best_accuracy:.4f}"
    )
    for b in model.backbones:
        freeze(b, 0)
    outcome = finish(
        model, cfg, data, fs.specs, history, fs.best_epoch, notes, ["head"], cache_counts(fs), feature_probs(fs)
    )
    # the fine-tuning stage ran, on this many processes; the weights are stage 1's
    return replace(outcome, world_size=res.world_size, kept_stage=fs.history[0]["stage"] if fs.history else None)


def run_finetune(ctx: RunContext) -> RecipeOutcome:
    """`finetune`: head on cached features, then the top N blocks + head at a lower, per-group learning rate."""
    return _two_stage(ctx.cfg, ctx.index, ctx.run_dir, ctx.progress, whole=False, logger=ctx.logger)


def run_unfreeze(ctx: RunContext) -> RecipeOutcome:
    """`unfreeze`: head on cached features, then the whole network at a low learning rate."""
    return _two_stage(ctx.cfg, ctx.index, ctx.run_dir, ctx.progress, whole=True, logger=ctx.logger)
