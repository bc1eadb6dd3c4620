"""`features`: each frozen backbone runs once per image (cached); only a dense head trains."""

from __future__ import annotations

import logging

from smallvision.models.folder import BackboneCard, HeadCard
from smallvision.recipes.base import RecipeOutcome, RunContext
from smallvision.recipes.steps import (
    feature_probs,
    feature_stage,
    weights_info,
)

log = logging.getLogger(__name__)


def run_features(ctx: RunContext) -> RecipeOutcome:
    """`features`: run each frozen backbone once per image (cached), then train only a dense head."""

    from smallvision.caching.features import backbone_state

    notes = ["recipe features: only a dense head trains; the pretrained backbone is frozen and cached"]
    cfg = ctx.cfg
    fs = feature_stage(cfg, ctx.index, ctx.progress, notes, ctx.logger)
    probs = feature_probs(fs)
    labels = {split: y for split, (_, y) in fs.by_split.items()}
    state: dict = {}
    cards = []
    for i, spec in enumerate(fs.specs):
        built = fs.cached.built.get(spec.fingerprint + spec.backbone)
        tensors, mean, std = backbone_state(spec, cfg.model.pool, f"backbones.{i}.", built)
        state.update(tensors)
        cards.append(
            BackboneCard(name=spec.backbone, pool=cfg.model.pool, mean=mean, std=std, weights=weights_info(spec))
        )
    state.update({f"head.{k}": v for k, v in fs.head.state_dict().items()})
    head_card = HeadCard(in_features=fs.cached.features.shape[1], hidden=cfg.model.hidden, dropout=cfg.model.dropout)
    cache = {"computed": fs.cached.computed, "reused": fs.cached.unique - fs.cached.computed}
    return RecipeOutcome(state, cards, head_card, fs.history, fs.best_epoch, probs, labels, notes, cache, ["head"])
