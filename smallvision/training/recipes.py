"""The recipes as explicit plans: which parts train, on what, for how long. Each returns a trained model state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from smallvision.config import RunConfig
from smallvision.data.scan import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.models.folder import BackboneCard, HeadCard
from smallvision.models.weights import WeightsSpec, resolve_weights

log = logging.getLogger(__name__)


@dataclass
class RecipeOutcome:
    """What a recipe hands back: full model state, its description, history and split predictions."""

    state: dict
    backbones: list[BackboneCard]
    head: HeadCard
    history: list[dict]
    best_epoch: int
    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    cache: dict[str, int] = field(default_factory=dict)


def resolve_specs(cfg: RunConfig) -> list[WeightsSpec]:
    """The weights source of every backbone named in the config."""
    names = cfg.model.backbones
    if cfg.model.weights and len(names) > 1:
        raise SmallvisionError("--weights names one file; with joined backbones use each backbone's default weights")
    return [resolve_weights(name, cfg.model.weights) for name in names]


def run_features(cfg: RunConfig, index: DatasetIndex, progress: bool = True) -> RecipeOutcome:
    """`features`: run each frozen backbone once per image (cached), then train only a dense head."""
    import torch

    from smallvision.models.head import Head
    from smallvision.training.features import backbone_state, cached_features, train_head

    specs = resolve_specs(cfg)
    for spec in specs:
        if not spec.pretrained:
            log.warning("backbone %s uses random weights: the features recipe learns little from them", spec.backbone)
    cached = cached_features(index.items, specs, cfg.data.image_size, cfg.model.pool, progress=progress)
    index.drop(cached.failures)
    notes = [
        f"recipe features: backbone(s) {' + '.join(s.backbone for s in specs)} frozen, run once per image; "
        f"only a dense head trains ({cached.computed} image(s) computed, "
        f"{cached.unique - cached.computed} from the feature cache)"
    ]
    by_split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    labels_all = np.array([it.label for it in cached.items], dtype=np.int64)
    splits_all = np.array([it.split for it in cached.items])
    for split in ("train", "val", "test"):
        mask = splits_all == split
        if mask.any():
            by_split[split] = (cached.features[mask], labels_all[mask])
    for split in ("train", "val"):
        if split not in by_split:
            raise SmallvisionError(f"no usable {split} images left after skipping unreadable files")

    torch.manual_seed(cfg.seed)
    head = Head(cached.features.shape[1], len(index.classes), cfg.model.dropout, cfg.model.hidden)
    r = cfg.recipe
    result = train_head(
        head,
        by_split["train"],
        by_split["val"],
        epochs=r.epochs,
        lr=r.lr,
        batch_size=r.batch_size,
        weight_decay=r.weight_decay,
        label_smoothing=r.label_smoothing,
        seed=cfg.seed,
        progress=progress,
    )
    notes.append(f"best epoch {result.best_epoch} of {r.epochs}, chosen on validation accuracy")

    probs, labels = {}, {}
    with torch.inference_mode():
        for split, (x, y) in by_split.items():
            probs[split] = head(torch.from_numpy(x)).softmax(1).numpy()
            labels[split] = y

    state: dict = {}
    cards = []
    for i, spec in enumerate(specs):
        tensors, mean, std = backbone_state(
            spec, cfg.model.pool, f"backbones.{i}.", cached.built.get(spec.fingerprint + spec.backbone)
        )
        state.update(tensors)
        weights_info = {"source": spec.source, "detail": spec.detail, "fingerprint": spec.fingerprint}
        cards.append(BackboneCard(name=spec.backbone, pool=cfg.model.pool, mean=mean, std=std, weights=weights_info))
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    head_card = HeadCard(in_features=cached.features.shape[1], hidden=cfg.model.hidden, dropout=cfg.model.dropout)
    cache = {"computed": cached.computed, "reused": cached.unique - cached.computed}
    return RecipeOutcome(state, cards, head_card, result.history, result.best_epoch, probs, labels, notes, cache)


RECIPES = {"features": run_features}
