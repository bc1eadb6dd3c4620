"""`frozen`: the pretrained backbone frozen, the head trained end to end with augmentation."""

from __future__ import annotations

import logging

from smallvision.recipes.base import RecipeOutcome, RunContext
from smallvision.recipes.steps import (
    frozen_summary,
    load_images,
    one_stage,
    pretrained_model,
    resolve_specs,
    task_of,
)

log = logging.getLogger(__name__)


def run_frozen(ctx: RunContext) -> RecipeOutcome:
    """`frozen`: the pretrained backbone frozen (BatchNorm too), the head trained end to end with augmentation."""
    import lightning as L

    from smallvision.models.backbone import freeze

    cfg, index, progress = ctx.cfg, ctx.index, ctx.progress
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    specs = resolve_specs(cfg)
    data = load_images(cfg, index, progress)
    model = pretrained_model(cfg, specs, len(index.classes), task=task_of(index))
    for b in model.backbones:
        freeze(b, 0)
    notes = [
        f"recipe frozen: backbone frozen, head trained end to end with augmentation "
        f"{cfg.recipe.augment.preset}; {frozen_summary(model)}"
    ]
    params = list(model.head.parameters())
    return one_stage(cfg, model, data, notes, "frozen", params, specs, ctx.run_dir, progress, ctx.logger)
