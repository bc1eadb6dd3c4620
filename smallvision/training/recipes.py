"""The recipes as explicit stage plans: which parts train, on what, for how long, at which learning rate."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from smallvision.config import RunConfig
from smallvision.data.scan import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.models.folder import BackboneCard, HeadCard, head_card
from smallvision.models.weights import WeightsSpec, resolve_weights
from smallvision.results import Decision
from smallvision.task import SINGLE_LABEL

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


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
    trainable: list[str] = field(default_factory=list)
    world_size: int = 1  # processes that really trained (Lightning's world size); the features path runs one
    image_size: int | None = None  # the input size the model was trained at, when the recipe chose it (auto)
    tta: str | None = None  # test-time augmentation the saved model applies itself ("hflip"), chosen on validation
    # decisions made on validation, by kind (auto's head rates, candidates, rounds, averages, flips); beyond them
    # every recipe keeps its best epoch on validation
    selection: dict[str, int] = field(default_factory=dict)
    resolved: dict | None = None  # config.yaml's resolved values when the run's own config does not hold them (auto)
    # the history stage whose best epoch the saved weights are, when not the last one (a fine-tuning stage that did
    # worse than the head before it): metrics.json's `kept_stage`, so the report marks the right row
    kept_stage: str | None = None
    decisions: list[Decision] = field(default_factory=list)  # what the recipe chose on its own, and why (auto)


def resolve_specs(cfg: RunConfig) -> list[WeightsSpec]:
    """The weights source of every backbone named in the config."""
    names = cfg.model.backbones
    if cfg.model.weights and len(names) > 1:
        raise SmallvisionError("--weights names one file; with joined backbones use each backbone's default weights")
    return [resolve_weights(name, cfg.model.weights) for name in names]


def _weights_info(spec: WeightsSpec) -> dict:
    return {"source": spec.source, "detail": spec.detail, "fingerprint": spec.fingerprint}


def _split_arrays(
    values: np.ndarray, items, splits=SPLITS, need=("train", "val")
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    labels = np.array([it.label for it in items], dtype=np.int64)
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


def _init_note(target: dict, source_dir: str | None) -> tuple[dict, str | None]:
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


def feature_stage(
    cfg: RunConfig, index: DatasetIndex, progress: bool, notes: list[str], logger, stage: str = "features"
) -> FeatureStage:
    """A dense head on cached features of the frozen backbone(s); its epochs logged and recorded as `stage`."""
    import torch

    from smallvision.models.head import Head
    from smallvision.training.features import cached_features, feature_precision, train_head
    from smallvision.training.trackers import log_epoch

    specs = resolve_specs(cfg)
    for spec in specs:
        if not spec.pretrained:
            log.warning("backbone %s uses random weights: the features recipe learns little from them", spec.backbone)
    # Training features in the trainer's precision; held-out ones in fp32 when that differs (see _held_out_features)
    exact = feature_precision(cfg.trainer.precision) == feature_precision("32-true")
    first = index.items if exact else [it for it in index.items if it.split == "train"]
    cached = cached_features(
        first, specs, cfg.data.image_size, cfg.model.pool, precision=cfg.trainer.precision, progress=progress
    )
    index.drop(cached.failures)
    by_split = _split_arrays(cached.features, cached.items, need=("train", "val") if exact else ("train",))
    if not exact:
        _held_out_features(cfg, index, specs, cached, by_split, progress, notes)
    notes.append(
        f"stage features: backbone(s) {' + '.join(s.backbone for s in specs)} frozen and run once per image; "
        f"a dense head trains on the cached features ({cached.computed} image(s) computed, "
        f"{cached.unique - cached.computed} from the feature cache)"
    )
    torch.manual_seed(cfg.seed)
    head = Head(cached.features.shape[1], len(index.classes), cfg.model.dropout, cfg.model.hidden)
    if cfg.recipe.init_from:
        kept, note = _init_note({f"head.{k}": v for k, v in head.state_dict().items()}, cfg.recipe.init_from)
        head.load_state_dict({k.removeprefix("head."): v for k, v in kept.items()}, strict=False)
        notes.append(note + f"; recipe {cfg.recipe.name} takes the head from it, the backbone starts pretrained")
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
        optimizer=r.optimizer,
        schedule=r.schedule_for("head"),
        momentum=r.momentum,
        warmup_epochs=r.warmup_epochs,
        class_weights=r.class_weights,
        patience=r.patience,
        progress=progress,
        on_epoch=lambda row: log_epoch(logger, {**row, "stage": stage}),
    )
    for row in result.history:
        row["stage"] = stage
    best = result.history[result.best_epoch - 1]["val_accuracy"]
    ran = len(result.history)
    stop = f", stopped after {ran} (--patience {r.patience})" if result.stopped_early else ""
    notes.append(
        f"stage features: {result.optimizer} with the {result.schedule} schedule, training features in "
        f"{feature_precision(cfg.trainer.precision)}; best epoch {result.best_epoch} of {r.epochs}{stop} "
        f"(val accuracy {best:.4f})"
    )
    return FeatureStage(head, result.history, result.best_epoch, best, specs, cached, by_split)


def _held_out_features(cfg: RunConfig, index, specs, cached, by_split: dict, progress: bool, notes: list) -> None:
    """Give val and test the fp32 features the saved model computes, so the reported numbers are that model's.

    Training features stay in the fast precision (bf16 here): on hymenoptera its val metrics differed from the saved
    model's. fp32 features are cached like the others, so a warm run only reads them; each image runs once.
    """
    from smallvision.training.features import cached_features, feature_precision

    held = [it for it in index.items if it.split in ("val", "test")]
    exact = cached_features(
        held, specs, cfg.data.image_size, cfg.model.pool, progress=progress, precision="32-true", built=cached.built
    )
    cached.built.update(exact.built)
    cached.computed += exact.computed
    cached.unique += exact.unique
    index.drop(exact.failures)
    by_split.update(_split_arrays(exact.features, exact.items, ("val", "test"), need=("val",)))
    notes.append(
        f"stage features: val/test features computed in fp32, as the saved model computes them (training features "
        f"in {feature_precision(cfg.trainer.precision)}), so the reported val/test numbers are the saved model's"
    )


def run_features(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool = True, logger=None
) -> RecipeOutcome:
    """`features`: run each frozen backbone once per image (cached), then train only a dense head."""

    from smallvision.training.features import backbone_state

    notes = ["recipe features: only a dense head trains; the pretrained backbone is frozen and cached"]
    fs = feature_stage(cfg, index, progress, notes, logger)
    probs = feature_probs(fs)
    labels = {split: y for split, (_, y) in fs.by_split.items()}
    state: dict = {}
    cards = []
    for i, spec in enumerate(fs.specs):
        built = fs.cached.built.get(spec.fingerprint + spec.backbone)
        tensors, mean, std = backbone_state(spec, cfg.model.pool, f"backbones.{i}.", built)
        state.update(tensors)
        cards.append(
            BackboneCard(name=spec.backbone, pool=cfg.model.pool, mean=mean, std=std, weights=_weights_info(spec))
        )
    state.update({f"head.{k}": v for k, v in fs.head.state_dict().items()})
    head_card = HeadCard(in_features=fs.cached.features.shape[1], hidden=cfg.model.hidden, dropout=cfg.model.dropout)
    cache = {"computed": fs.cached.computed, "reused": fs.cached.unique - fs.cached.computed}
    return RecipeOutcome(state, cards, head_card, fs.history, fs.best_epoch, probs, labels, notes, cache, ["head"])


# ---------------------------------------------------------------- end-to-end stages (Lightning)


def load_images(cfg: RunConfig, index: DatasetIndex, progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split's decoded images and labels at the run's size, from the image cache; unreadable files dropped."""
    from smallvision.data.cache import decoded_images

    items = index.items
    arr, failed = decoded_images(
        [it.path for it in items], [it.digest for it in items], cfg.data.image_size, progress=progress
    )
    index.drop({items[p].digest: reason for p, reason in failed.items()})
    return _split_arrays(arr, index.items)


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
                BackboneCard(name=specs[i].backbone, pool=b.pool, mean=mean, std=std, weights=_weights_info(specs[i]))
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


def _finish(model, cfg, data, specs, history, best_epoch, notes, trainable, cache=None, probs=None) -> RecipeOutcome:
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


def _frozen_summary(model) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} of {total:,} parameters train ({total - train:,} frozen)"


def run_scratch(
    cfg: RunConfig,
    index: DatasetIndex,
    run_dir: Path,
    progress: bool = True,
    logger=None,
    stage: str = "scratch",
    max_seconds: float | None = None,
) -> RecipeOutcome:
    """`scratch`: a small CNN from random init, trained end to end (augmentation and dropout as configured)."""
    import lightning as L

    from smallvision.models.backbone import scratch_backbone
    from smallvision.models.head import Head, ImageClassifier

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_images(cfg, index, progress)
    name = cfg.model.backbones[0]
    backbone = scratch_backbone(name, cfg.data.image_size, cfg.model.batch_norm)
    head = Head(backbone.net.num_features, len(index.classes), cfg.model.dropout, cfg.model.hidden)
    model = ImageClassifier([backbone], head)
    notes = [
        f"recipe scratch: {name} from random init, augmentation {cfg.recipe.augment.preset}, "
        f"dropout {cfg.model.dropout}; {_frozen_summary(model)}"
    ]
    params = list(model.parameters())
    return _one_stage(cfg, model, data, notes, stage, params, None, run_dir, progress, logger, max_seconds)


def _one_stage(
    cfg, model, data, notes, stage, params, specs, run_dir: Path, progress: bool, logger, max_seconds=None
) -> RecipeOutcome:
    """Apply --init-from, train `params` at the recipe's lr for one stage, and package the outcome.

    A pretrained model (`specs`) trains on cached activations of its frozen part where they fit in memory.
    """
    from smallvision.training.fit import run_stage

    kept, note = _init_note(model.state_dict(), cfg.recipe.init_from)
    if note:
        model.load_state_dict(kept, strict=False)
        notes.append(note)
    r = cfg.recipe
    views = activation_views(cfg, model, data, notes, progress) if specs is not None else None
    groups = [{"params": params, "lr": r.lr, "name": stage}]
    stage_dir = run_dir / "checkpoints" / stage
    res = run_stage(
        stage,
        model,
        groups,
        data,
        cfg,
        r.epochs,
        stage_dir,
        progress,
        views=views,
        logger=logger,
        max_seconds=max_seconds,
    )
    ran = len(res.history)
    cut = f", stopped by the clock after {ran} (--time-budget)" if ran < r.epochs and not r.patience else ""
    notes.append(
        f"stage {stage}: {r.optimizer} with the {r.schedule_for('network')} schedule; best epoch {res.best_epoch} of "
        f"{r.epochs}{cut} (val accuracy {res.best_accuracy:.4f})"
    )
    trainable = ["all"] if specs is None else ["head"]
    probs = views.probabilities() if views is not None else None
    outcome = _finish(model, cfg, data, specs, res.history, res.best_epoch, notes, trainable, probs=probs)
    return replace(outcome, world_size=res.world_size)


def pretrained_model(cfg: RunConfig, specs: list[WeightsSpec], num_classes: int, head=None):
    """The pretrained backbone(s) of `specs` under a new head (or `head`), ready for a recipe to fine-tune."""
    from smallvision.models.backbone import build_backbone
    from smallvision.models.head import Head, ImageClassifier

    backbones = [build_backbone(spec, cfg.model.pool) for spec in specs]
    for spec, b in zip(specs, backbones, strict=True):
        b.check_size(cfg.data.image_size, spec.backbone)
    dim = sum(b.feature_dim(cfg.data.image_size) for b in backbones)
    model = ImageClassifier(backbones, head or Head(dim, num_classes, cfg.model.dropout, cfg.model.hidden))
    return model


def run_frozen(cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool = True, logger=None) -> RecipeOutcome:
    """`frozen`: the pretrained backbone frozen (BatchNorm too), the head trained end to end with augmentation."""
    import lightning as L

    from smallvision.models.backbone import freeze

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    specs = resolve_specs(cfg)
    data = load_images(cfg, index, progress)
    model = pretrained_model(cfg, specs, len(index.classes))
    for b in model.backbones:
        freeze(b, 0)
    notes = [
        f"recipe frozen: backbone frozen, head trained end to end with augmentation "
        f"{cfg.recipe.augment.preset}; {_frozen_summary(model)}"
    ]
    params = list(model.head.parameters())
    return _one_stage(cfg, model, data, notes, "frozen", params, specs, run_dir, progress, logger)


def _two_stage(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool, whole: bool, logger
) -> RecipeOutcome:
    """Stage 1: head on cached features. Stage 2: unfreeze the top blocks (or everything) at a lower lr."""
    import lightning as L

    from smallvision.models.backbone import freeze
    from smallvision.training.fit import run_stage

    notes: list[str] = []
    fs = feature_stage(cfg, index, progress, notes, logger)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_images(cfg, index, progress)
    model = pretrained_model(cfg, fs.specs, len(index.classes), head=fs.head)
    r = cfg.recipe
    trainable = {}
    for i, b in enumerate(model.backbones):
        trainable[i] = freeze(b, None) if whole else freeze(b, r.unfreeze_blocks, r.unfreeze_from)
    what = "the whole backbone trains" if whole else f"blocks {', '.join(trainable[0])} train"
    stage = "unfreeze" if whole else "finetune"
    notes.append(
        f"stage {stage}: {what} at lr {r.finetune_lr:g} (lower groups x{r.layer_decay} each), the head at lr "
        f"{r.lr:g}; {_frozen_summary(model)}"
    )
    history = list(fs.history)

    features_state = copy.deepcopy(model.state_dict())
    views = activation_views(cfg, model, data, notes, progress)
    groups = param_groups(model, trainable, r.lr, r.finetune_lr, r.layer_decay)
    stage_dir = run_dir / "checkpoints" / stage
    res = run_stage(stage, model, groups, data, cfg, r.finetune_epochs, stage_dir, progress, views=views, logger=logger)
    history += res.history
    notes.append(
        f"stage {stage}: best epoch {res.best_epoch} of {r.finetune_epochs} (val accuracy {res.best_accuracy:.4f})"
    )
    best_epoch = res.best_epoch
    if res.best_accuracy < fs.best_accuracy:
        model.load_state_dict(features_state)
        notes.append(
            f"{cfg.recipe.name}: kept the stage-1 (features) model: val accuracy {fs.best_accuracy:.4f}; "
            f"{stage} reached {res.best_accuracy:.4f}"
        )
        for b in model.backbones:
            freeze(b, 0)
        outcome = _finish(
            model, cfg, data, fs.specs, history, fs.best_epoch, notes, ["head"], _cache(fs), feature_probs(fs)
        )
        # the fine-tuning stage ran, on this many processes; the weights are stage 1's
        return replace(outcome, world_size=res.world_size, kept_stage=fs.history[0]["stage"] if fs.history else None)
    trained = ["head"] + [f"backbones.{i}.{n}" for i, names in trainable.items() for n in names]
    probs = views.probabilities() if views is not None else None
    outcome = _finish(model, cfg, data, fs.specs, history, best_epoch, notes, trained, _cache(fs), probs)
    return replace(outcome, world_size=res.world_size)


def feature_probs(fs: FeatureStage) -> dict[str, np.ndarray]:
    """Every split's probabilities from the stage-1 head on the cached features (no network run)."""
    import torch

    fs.head.eval()
    with torch.inference_mode():
        return {
            s: SINGLE_LABEL.probabilities(fs.head(torch.from_numpy(x))).numpy() for s, (x, _) in fs.by_split.items()
        }


def activation_views(cfg: RunConfig, model, data, notes: list[str], progress: bool):
    """Boundary activations for fine-tuning (see training/activations.py), or None to train on images."""
    from smallvision.data.transforms import train_transform
    from smallvision.training.activations import boundary_split, compute_views, estimate_bytes
    from smallvision.training.fit import resolve_precision

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
    precision = "bf16" if resolve_precision(cfg.trainer.precision) == "bf16-mixed" else "fp32"
    counts = {s: len(y) for s, (_, y) in data.items()}
    need = estimate_bytes(split, size, counts, views if augmented else 0, precision)
    budget = cfg.trainer.memory_budget
    if need > budget * 1e9:
        notes.append(
            f"activation cache: not used: it would take {need / 1e9:.1f} GB, over --memory-budget {budget:g} GB; "
            "every epoch runs the whole network (raise --memory-budget or lower --cached-views to cache)"
        )
        return None
    what = f"{views} augmented view(s) of each training image" if augmented else "each image"
    notes.append(
        f"activation cache: the frozen layers below the trainable blocks ran once for {what} "
        f"({need / 1e6:.0f} MB of host memory, stored as {precision}); training runs only the trainable blocks and "
        "the head"
    )
    return compute_views(split, data, transform if augmented else None, views, precision, cfg.seed, progress=progress)


def _cache(fs: FeatureStage) -> dict:
    return {"computed": fs.cached.computed, "reused": fs.cached.unique - fs.cached.computed}


def estimate_stage_seconds(model, data, cfg: RunConfig, views=None, warmup: int = 2, timed: int = 3) -> dict:
    """Seconds the fine-tuning stage would take, from training steps timed as training runs them.

    On the training device at the training precision (the same autocast), after `warmup` untimed steps (the first
    ones pay for allocation and kernel selection); the median of `timed` steps and of validation batches, scaled to
    the planned epochs and this run's processes. The global RNG is left as found, so timing never changes the model.
    """
    import torch

    from smallvision.models.inference import inference_device
    from smallvision.training.distributed import world_devices
    from smallvision.training.fit import autocast_dtype, resolve_precision

    r = cfg.recipe
    precision = resolve_precision(cfg.trainer.precision)
    dtype = autocast_dtype(precision)
    device = inference_device()
    if views is not None:
        model = views.model
        x = views.train[0][: r.batch_size].float()
    else:
        images = np.ascontiguousarray(data["train"][0][: r.batch_size])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(data["train"][1][: r.batch_size]).to(device)
    x = (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x).to(device)

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
    step, val = float(np.median(steps)), float(np.median(vals))
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


def run_finetune(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool = True, logger=None
) -> RecipeOutcome:
    """`finetune`: head on cached features, then the top N blocks + head at a lower, per-group learning rate."""
    return _two_stage(cfg, index, run_dir, progress, whole=False, logger=logger)


def run_unfreeze(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool = True, logger=None
) -> RecipeOutcome:
    """`unfreeze`: head on cached features, then the whole network at a low learning rate."""
    return _two_stage(cfg, index, run_dir, progress, whole=True, logger=logger)


RUNNERS = {  # the runner of each row of recipe_specs.SPECS but the planning one (training/registry.py)
    "features": run_features,
    "scratch": run_scratch,
    "frozen": run_frozen,
    "finetune": run_finetune,
    "unfreeze": run_unfreeze,
}
