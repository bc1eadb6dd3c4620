"""The public building blocks the recipes share: weights, cached features and their head, decoded images, parameter
groups, the activation cache, one end-to-end stage, and the packaged outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from smallvision.config import RunConfig
from smallvision.data.index import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.models.folder import BackboneCard, head_card
from smallvision.models.weights import WeightsSpec, resolve_weights
from smallvision.recipes.base import RecipeOutcome
from smallvision.task import METRIC_NAMES, SINGLE_LABEL, task_named

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def resolve_specs(cfg: RunConfig) -> list[WeightsSpec]:
    """The weights source of every backbone named in the config."""
    names = cfg.model.backbones
    if cfg.model.weights and len(names) > 1:
        raise SmallvisionError("--weights names one file; with joined backbones use each backbone's default weights")
    return [resolve_weights(name, cfg.model.weights) for name in names]


def weights_info(spec: WeightsSpec) -> dict:
    return {"source": spec.source, "detail": spec.detail, "fingerprint": spec.fingerprint}


def task_of(index: DatasetIndex):
    """The task of a scanned folder (single- or multi-label): what its recipes train and score."""
    return task_named(index.task)


def split_arrays(
    values: np.ndarray, items, index: DatasetIndex, splits=SPLITS, need=("train", "val")
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's (values, targets) of `items` (in the index's task's target form), refusing a needed empty one."""
    labels = task_of(index).targets(items, len(index.classes))
    names = np.array([it.split for it in items])
    out = {}
    for split in splits:
        mask = names == split
        if mask.any():
            out[split] = (np.asarray(values[mask]), labels[mask])
    for split in need:
        if split not in out:
            raise SmallvisionError(f"no usable {split} images left after skipping unreadable files")
    return out


def init_note(target: dict, source_dir: str | None) -> tuple[dict, str | None]:
    """Copy every tensor of a saved model whose name and shape fit; report what was kept and what was not."""
    if not source_dir:
        return {}, None
    from safetensors.torch import load_file

    from smallvision.models.folder import WEIGHTS_FILE, read_card

    read_card(source_dir)
    source = load_file(str(Path(source_dir) / WEIGHTS_FILE))
    kept = {k: v for k, v in source.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
    skipped = [k for k in target if k not in kept]
    note = f"--init-from {source_dir}: kept {len(kept)} tensor(s), {len(skipped)} left as initialised"
    if skipped:
        note += f" ({', '.join(skipped[:4])}{' ...' if len(skipped) > 4 else ''})"
    return kept, note


# ---------------------------------------------------------------- stage 1: features, cached, head only


@dataclass
class FeatureStage:
    head: object
    history: list[dict]
    best_epoch: int
    best_accuracy: float
    specs: list[WeightsSpec]
    cached: object
    by_split: dict
    task: object = SINGLE_LABEL


def feature_stage(
    cfg: RunConfig, index: DatasetIndex, progress: bool, notes: list[str], logger, stage: str = "features", tap=None
) -> FeatureStage:
    """A dense head on cached features of the frozen backbone(s); its epochs logged and recorded as `stage` (a `tap`
    keeps a fine-tuning boundary's activations from the images the pass computes: caching/taps.py)."""
    from smallvision.caching.features import cached_features, feature_precision
    from smallvision.engine.stage import Tensors, stage_spec
    from smallvision.engine.trainer import fit

    specs = resolve_specs(cfg)
    for spec in specs:
        if not spec.pretrained:
            log.warning("backbone %s uses random weights: the features recipe learns little from them", spec.backbone)
    # Training features in the trainer's precision; held-out ones in fp32 when that differs (see _held_out_features)
    exact = feature_precision(cfg.trainer.precision) == feature_precision("32-true")
    first = index.items if exact else [it for it in index.items if it.split == "train"]
    cached = cached_features(
        first, specs, cfg.data.image_size, cfg.model.pool, precision=cfg.trainer.precision, progress=progress, tap=tap
    )
    index.drop(cached.failures)
    by_split = split_arrays(cached.features, cached.items, index, need=("train", "val") if exact else ("train",))
    if not exact:
        _held_out_features(cfg, index, specs, cached, by_split, progress, notes, tap)
    notes.append(
        f"stage features: backbone(s) {' + '.join(s.backbone for s in specs)} frozen and run once per image; "
        f"a dense head trains on the cached features ({cached.computed} image(s) computed, "
        f"{cached.unique - cached.computed} from the feature cache)"
    )
    head, note = feature_head(cfg, cached.features.shape[1], len(index.classes))
    notes.extend([note] if note else [])
    head_spec = stage_spec(cfg, stage, "head")
    log_row = epoch_logger(logger)
    on_epoch = lambda row: log_row({**row, "stage": stage})  # noqa: E731
    task = task_of(index)
    data = Tensors(by_split["train"], by_split["val"])
    result = fit(head, data, head_spec, task, progress=progress, on_epoch=on_epoch)
    for row in result.history:
        row["stage"] = stage
    best = result.best_accuracy
    ran = len(result.history)
    stop = f", stopped after {ran} (--patience {head_spec.patience})" if result.stopped_early else ""
    notes.append(
        f"stage features: {head_spec.optimizer} with the {head_spec.schedule} schedule, training features in "
        f"{feature_precision(cfg.trainer.precision)}; best epoch {result.best_epoch} of {head_spec.epochs}{stop} "
        f"(val {METRIC_NAMES[task.metric]} {best:.4f})"
    )
    return FeatureStage(head, result.history, result.best_epoch, best, specs, cached, by_split, task)


def feature_head(cfg: RunConfig, dim: int, classes: int, seed: int | None = None) -> tuple[object, str | None]:
    """A fresh dense head for `dim`-wide features, seeded (`seed`, else the run's), or the one --init-from gives,
    and the note that says it was taken from there."""
    import torch

    from smallvision.models.head import Head

    torch.manual_seed(cfg.seed if seed is None else seed)
    head = Head(dim, classes, cfg.model.dropout, cfg.model.hidden)
    if not cfg.recipe.init_from:
        return head, None
    kept, note = init_note({f"head.{k}": v for k, v in head.state_dict().items()}, cfg.recipe.init_from)
    head.load_state_dict({k.removeprefix("head."): v for k, v in kept.items()}, strict=False)
    return head, note + f"; recipe {cfg.recipe.name} takes the head from it, the backbone starts pretrained"


def _held_out_features(
    cfg: RunConfig, index, specs, cached, by_split: dict, progress: bool, notes: list, tap=None
) -> None:
    """Give val and test the fp32 features the saved model computes, so the reported numbers are that model's.

    Training features stay in the fast precision (bf16 here): on hymenoptera its val metrics differed from the saved
    model's. fp32 features are cached like the others, so a warm run only reads them; each image runs once.
    """
    from smallvision.caching.features import cached_features, feature_precision

    held = [it for it in index.items if it.split in ("val", "test")]
    exact = cached_features(
        held,
        specs,
        cfg.data.image_size,
        cfg.model.pool,
        progress=progress,
        precision="32-true",
        built=cached.built,
        tap=tap,
    )
    cached.built.update(exact.built)
    cached.computed += exact.computed
    cached.unique += exact.unique
    index.drop(exact.failures)
    by_split.update(split_arrays(exact.features, exact.items, index, ("val", "test"), need=("val",)))
    notes.append(
        f"stage features: val/test features computed in fp32, as the saved model computes them (training features "
        f"in {feature_precision(cfg.trainer.precision)}), so the reported val/test numbers are the saved model's"
    )


# ---------------------------------------------------------------- end-to-end stages (Lightning)


def load_images(cfg: RunConfig, index: DatasetIndex, progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split's decoded images and labels at the run's size, from the image cache; unreadable files dropped."""
    from smallvision.data.cache import decoded_images

    items = index.items
    arr, failed = decoded_images(
        [it.path for it in items], [it.digest for it in items], cfg.data.image_size, progress=progress
    )
    index.drop({items[p].digest: reason for p, reason in failed.items()})
    return split_arrays(arr, index.items, index)


def param_groups(model, trainable: dict[int, list[str]], head_lr: float, body_lr: float, decay: float) -> list[dict]:
    """Head at `head_lr`; each trainable backbone group at body_lr * decay**(depth from the top)."""
    from smallvision.models.backbone import block_groups

    groups = [{"params": [p for p in model.head.parameters()], "lr": head_lr, "name": "head"}]
    for i, backbone in enumerate(model.backbones):
        names = trainable.get(i, [])
        blocks = [(n, mods) for n, mods in block_groups(backbone) if n in names]
        seen: set[int] = set()
        for depth, (name, mods) in enumerate(reversed(blocks)):
            params = [p for m in mods for p in m.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, "lr": body_lr * decay**depth, "name": f"backbones.{i}.{name}"})
        rest = [p for p in backbone.parameters() if p.requires_grad and id(p) not in seen]
        if rest:
            groups.append(
                {"params": rest, "lr": body_lr * decay ** max(0, len(blocks) - 1), "name": f"backbones.{i}.other"}
            )
    return groups


def backbone_cards(model, specs: list[WeightsSpec] | None, cfg: RunConfig) -> list[BackboneCard]:
    """What the model card records of each backbone: its name, pooling, normalization and weights (or scratch
    options)."""
    cards = []
    for i, b in enumerate(model.backbones):
        mean = tuple(float(v) for v in b.mean.flatten())
        std = tuple(float(v) for v in b.std.flatten())
        if specs:
            cards.append(
                BackboneCard(name=specs[i].backbone, pool=b.pool, mean=mean, std=std, weights=weights_info(specs[i]))
            )
        else:
            options = {"image_size": cfg.data.image_size, "batch_norm": cfg.model.batch_norm}
            cards.append(
                BackboneCard(
                    name=cfg.model.backbones[i],
                    pool=b.pool,
                    mean=mean,
                    std=std,
                    weights={"source": "random", "detail": "trained from scratch"},
                    options=options,
                )
            )
    return cards


def finish(model, cfg, data, specs, history, best_epoch, notes, trainable, cache=None, probs=None) -> RecipeOutcome:
    from smallvision.prediction import probabilities

    if probs is None:
        probs = {s: probabilities(model, x) for s, (x, _) in data.items()}
    labels = {s: y for s, (_, y) in data.items()}
    head = head_card(model.head)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RecipeOutcome(
        state,
        backbone_cards(model, specs, cfg),
        head,
        history,
        best_epoch,
        probs,
        labels,
        notes,
        cache or {},
        trainable,
    )


def frozen_summary(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} of {total:,} parameters train ({total - train:,} frozen)"


def one_stage(
    cfg, model, data, notes, stage, params, specs, run_dir: Path, progress: bool, logger, max_seconds=None
) -> RecipeOutcome:
    """Apply --init-from, train `params` at the recipe's lr for one stage, and package the outcome.

    A pretrained model (`specs`) trains on cached activations of its frozen part where they fit in memory.
    """
    from smallvision.engine.stage import stage_spec
    from smallvision.engine.trainer import fit

    kept, note = init_note(model.state_dict(), cfg.recipe.init_from)
    if note:
        model.load_state_dict(kept, strict=False)
        notes.append(note)
    r = cfg.recipe
    views = activation_views(cfg, model, data, notes, progress) if specs is not None else None
    groups = [{"params": params, "lr": r.lr, "name": stage}]
    spec = stage_spec(cfg, stage, "network", max_seconds=max_seconds)
    on_epoch = epoch_logger(logger)
    stage_dir = run_dir / "checkpoints" / stage
    res = fit(
        model,
        image_data(cfg, data, views),
        spec,
        model.task,
        groups=groups,
        stage_dir=stage_dir,
        progress=progress,
        on_epoch=on_epoch,
    )
    ran = len(res.history)
    cut = f", stopped by the clock after {ran} (--time-budget)" if ran < r.epochs and not r.patience else ""
    notes.append(
        f"stage {stage}: {r.optimizer} with the {r.schedule_for('network')} schedule; best epoch {res.best_epoch} of "
        f"{r.epochs}{cut} (val {METRIC_NAMES[model.task.metric]} {res.best_accuracy:.4f})"
    )
    trainable = ["all"] if specs is None else ["head"]
    probs = views.probabilities(model.task) if views is not None else None
    outcome = finish(model, cfg, data, specs, res.history, res.best_epoch, notes, trainable, probs=probs)
    return replace(outcome, world_size=res.world_size)


def image_data(cfg: RunConfig, data: dict[str, tuple[np.ndarray, np.ndarray]], views=None):
    """An end-to-end stage's data (engine.stage.ImageData): the decoded images, the run's training transform and
    loader workers, and the cached activation views when there are any."""
    from smallvision.data.transforms import train_transform
    from smallvision.engine.stage import ImageData

    transform = train_transform(cfg.recipe.augment, cfg.data.image_size)
    return ImageData(data, transform, cfg.trainer.workers, views)


def epoch_logger(logger):
    """The per-epoch callback that logs each history row to the run's tracker (none: nothing is logged)."""
    from smallvision.engine.trackers import log_epoch

    return lambda row: log_epoch(logger, row)


def pretrained_model(cfg: RunConfig, specs: list[WeightsSpec], num_classes: int, head=None, task=SINGLE_LABEL):
    """The pretrained backbone(s) of `specs` under a new head (or `head`), ready for a recipe to fine-tune."""
    from smallvision.models.backbone import build_backbone
    from smallvision.models.head import Head, ImageClassifier

    backbones = [build_backbone(spec, cfg.model.pool) for spec in specs]
    for spec, b in zip(specs, backbones, strict=True):
        b.check_size(cfg.data.image_size, spec.backbone)
    dim = sum(b.feature_dim(cfg.data.image_size) for b in backbones)
    return ImageClassifier(backbones, head or Head(dim, num_classes, cfg.model.dropout, cfg.model.hidden), task=task)


def feature_probs(fs: FeatureStage) -> dict[str, np.ndarray]:
    """Every split's probabilities from the stage-1 head on the cached features (no network run)."""
    import torch

    fs.head.eval()
    with torch.inference_mode():
        return {s: fs.task.probabilities(fs.head(torch.from_numpy(x))).numpy() for s, (x, _) in fs.by_split.items()}


def activation_views(cfg: RunConfig, model, data, notes: list[str], progress: bool, tap=None, index=None):
    """Boundary activations for fine-tuning (see caching/activations.py), or None to train on images; those the
    feature pass kept in `tap` (caching/taps.py) of `index`'s images (the ones `data` holds) are taken, not run."""
    from smallvision.caching.activations import boundary_split, compute_views, estimate_bytes, view_precision
    from smallvision.data.transforms import train_transform
    from smallvision.engine.precision import resolve_precision

    r = cfg.recipe
    size = cfg.data.image_size
    if r.cached_views == 0:
        notes.append("activation cache: off (--cached-views 0); every epoch runs the whole network")
        return None
    transform = train_transform(r.augment, size)
    augmented = len(transform.transforms) > 1
    views = r.cached_views if r.cached_views is not None else (4 if augmented else 1)
    split, why = boundary_split(model, size)
    if split is None:
        notes.append(f"activation cache: not used ({why}); every epoch runs the whole network")
        return None
    precision = view_precision(resolve_precision(cfg.trainer.precision))
    counts = {s: len(y) for s, (_, y) in data.items()}
    need = estimate_bytes(split, size, counts, views if augmented else 0, precision)
    budget = cfg.trainer.memory_budget
    if need > budget * 1e9:
        notes.append(
            f"activation cache: not used: it would take {need / 1e9:.1f} GB, over --memory-budget {budget:g} GB; "
            "every epoch runs the whole network (raise --memory-budget or lower --cached-views to cache)"
        )
        return None
    given = taken_activations(cfg, split, precision, (tap, split_digests(index))) if tap is not None else {}
    what = f"{views} augmented view(s) of each training image" if augmented else "each image"
    kept = [s for s in ("train", "val", "test") if s in given]
    reuse = f"; {', '.join(kept)} taken as the feature pass computed them, not run again" if given else ""
    if tap is not None and len(kept) < len(data):  # the pass was to keep them: say why it did not
        why = tap.declined.get(cfg.model.backbone, "their features were already cached")
        reuse += f"; {'the others' if kept else 'every split'} ran here ({why})"
    notes.append(
        f"activation cache: the frozen layers below the trainable blocks ran once for {what} "
        f"({need / 1e6:.0f} MB of host memory, stored as {precision}{reuse}); training runs only the trainable "
        "blocks and the head"
    )
    transform = transform if augmented else None
    return compute_views(split, data, transform, views, precision, cfg.seed, progress=progress, given=given)


def taken_activations(cfg: RunConfig, split, precision: str, tapped: tuple) -> dict:
    """The unaugmented activations of each split the feature pass kept at `split`'s boundary (`tapped`: the tap, each
    split's digests), in the arithmetic the cache stores them in (the training views in `precision`, val/test in
    fp32); the tap's rows for the backbone are freed once taken."""
    tap, digests = tapped
    name = cfg.model.backbone
    given = {}
    for s, keys in digests.items():
        rows = tap.take(name, precision if s == "train" else "fp32", split.k, keys)
        if rows is not None:
            given[s] = rows
    tap.release(name)
    return given


def split_digests(index: DatasetIndex) -> dict[str, list[str]]:
    """Each split's image digests in the order split_arrays lays out its rows."""
    out: dict[str, list[str]] = {}
    for it in index.items:
        out.setdefault(it.split, []).append(it.digest)
    return out


def cache_counts(fs: FeatureStage) -> dict:
    return {"computed": fs.cached.computed, "reused": fs.cached.unique - fs.cached.computed}
