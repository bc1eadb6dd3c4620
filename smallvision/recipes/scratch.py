"""`scratch`: a small CNN from random init, trained end to end."""

from __future__ import annotations

import logging

from smallvision.recipes.base import RecipeOutcome, RunContext
from smallvision.recipes.steps import (
    frozen_summary,
    load_images,
    one_stage,
    task_of,
)

log = logging.getLogger(__name__)


def run_scratch(ctx: RunContext, stage: str = "scratch", max_seconds: float | None = None) -> RecipeOutcome:
    """`scratch`: a small CNN from random init, trained end to end (augmentation and dropout as configured)."""
    import lightning as L

    from smallvision.models.backbone import scratch_backbone
    from smallvision.models.head import Head, ImageClassifier

    cfg, index, progress = ctx.cfg, ctx.index, ctx.progress
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_images(cfg, index, progress)
    name = cfg.model.backbones[0]
    backbone = scratch_backbone(name, cfg.data.image_size, cfg.model.batch_norm)
    head = Head(backbone.net.num_features, len(index.classes), cfg.model.dropout, cfg.model.hidden)
    model = ImageClassifier([backbone], head, task=task_of(index))
    notes = [
        f"recipe scratch: {name} from random init, augmentation {cfg.recipe.augment.preset}, "
        f"dropout {cfg.model.dropout}; {frozen_summary(model)}"
    ]
    params = list(model.parameters())
    return one_stage(cfg, model, data, notes, stage, params, None, ctx.run_dir, progress, ctx.logger, max_seconds)
