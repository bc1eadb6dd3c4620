"""`auto`: read the data, plan within the time budget up front, run the plan, and choose everything on validation.

1. Read the data (data/profile.py): images, classes, balance, native sizes, colour. Small or grayscale images also
   get the ImageNet-distance probe (training/probe.py): pretrained features against a from-scratch CNN on a sample.
2. Plan (`make_plan`): the candidates (a from-scratch CNN at the native size; efficientnet_lite2/0/1 features at one
   shared size, so their probabilities can be averaged), the fine-tuning rounds and test-time augmentation, each
   costed from throughput measured on warm-up batches (training/costs.py). The richest plan whose estimate fits the
   budget is chosen, printed, and recorded in checkpoints/auto_plan.json; a rerun and every `--resume` follow it.
3. Run it: every candidate, then fine-tuning rounds while validation improves (more epochs at half the learning
   rate, then one more block at a quarter), then an average of candidates and flipped views, each kept only if it
   beats what it would replace on validation. Test probabilities are computed alongside but never looked at here:
   the caller reports them once, for the final model only (they are what the saved model computes).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallvision import runclock
from smallvision.config import (
    APPLIES,
    PLANNING,
    RunConfig,
    nested,
    option_flag,
    stage_values,
    unapplied,
    user_set,
)
from smallvision.data.scan import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.results import RunNotes
from smallvision.task import SINGLE_LABEL
from smallvision.training import recipes

log = logging.getLogger(__name__)

PLAN_FILE = "auto_plan.json"
PLAN_VERSION = 3  # 3: fine-tuning rounds start at three tenths of --lr (2: a tenth)
SCRATCH = "small_cnn"
HEAD_LRS = (1e-3, 3e-3)  # head learning rates tried on cached features (seconds each); 3e-3 won on hymenoptera/monkeys
TAIL = 15.0  # seconds a clock check keeps for saving the model, evaluation and the report
SAFETY = 0.9  # share of the budget the plan's estimates may fill: estimates err, Lightning and saving take time
RESERVED = 45.0  # seconds kept for scanning, timing the steps (on a machine's first run), saving, the report
PROBE_SECONDS = 15.0  # what reading the data and the probe may take before the plan is made
SCRATCH_EPOCHS = 30  # the cosine schedule runs to its end (the best epoch is kept): early stopping cut it short
SCRATCH_MIN_EPOCHS = 5
SCRATCH_SHARE = 0.4  # of the plan's seconds, beside pretrained candidates
# (backbones, augmented views cached per training image, fine-tuning rounds), richest first; the plan takes the first
# that fits the budget, with test-time augmentation if it also fits.
LEVELS: tuple[tuple[tuple[str, ...], int, int], ...] = (
    (("efficientnet_lite2", "efficientnet_lite0", "efficientnet_lite1"), 4, 3),
    (("efficientnet_lite2", "efficientnet_lite0"), 4, 3),
    (("efficientnet_lite2", "efficientnet_lite0"), 2, 2),
    (("efficientnet_lite2",), 2, 2),
    (("efficientnet_lite2",), 2, 1),
    (("efficientnet_lite0",), 2, 1),
    (("efficientnet_lite0",), 1, 1),
    (("efficientnet_lite0",), 0, 0),
)
SMALL_SIZES = (192, 160, 128)  # the features-only fallbacks for folders too large for the levels above


# ---------------------------------------------------------------------------------------------------- the plan


def _counts(index: DatasetIndex) -> dict[str, int]:
    out = {"train": 0, "val": 0, "test": 0}
    for it in index.items:
        out[it.split] += 1
    return out


def _round_seconds(fig: dict, n: dict[str, int], epochs: int, views: int, new_views: bool, batch: int) -> float:
    train_batches = math.ceil(n["train"] / batch)
    val_batches = math.ceil(n["val"] / batch)
    seconds = epochs * (train_batches * fig["step_seconds"] + val_batches * fig["val_batch_seconds"])
    if new_views and fig["bottom_images_per_second"] > 0:
        seconds += (n["train"] * max(views, 1) + 2 * (n["val"] + n["test"])) / fig["bottom_images_per_second"]
    return seconds


def _round_cost(cfg: RunConfig, costs, spec, size: int, rnd: dict, views: int, n: dict, new: bool) -> tuple:
    """Seconds of a fine-tuning round as it will run, at --batch-size, and how: on cached activations when they fit
    --memory-budget (as recipes.activation_views decides), else on full images, every step the whole network."""
    from smallvision.training.activations import cache_bytes

    batch, budget = cfg.recipe.batch_size, cfg.trainer.memory_budget
    values = costs.activations(spec, size, rnd["blocks"]) if views else 0
    how = "on full images (--cached-views 0)" if not views else "on full images (no cacheable boundary)"
    if values:
        arithmetic = "bf16" if costs.precision == "bf16-mixed" else "fp32"
        need = cache_bytes(values, n, views if cfg.recipe.augment.augments() else 0, arithmetic)
        if need <= budget * 1e9:
            fig = costs.finetune(spec, size, rnd["blocks"], batch)
            seconds = _round_seconds(fig, n, rnd["epochs"], views, new, batch)
            return seconds, f"on cached activations ({need / 1e9:.2g} GB)"
        how = f"on full images (cached activations: {need / 1e9:.2g} GB, over --memory-budget {budget:g} GB)"
    fig = {**costs.finetune_images(spec, size, rnd["blocks"], batch), "bottom_images_per_second": 0}
    return _round_seconds(fig, n, rnd["epochs"], views, False, batch), how


def _rounds(cfg: RunConfig, blocks: int, count: int) -> list[dict]:
    """Fine-tuning rounds: the top blocks, then as many epochs more at half the rate, then one block more."""
    r = cfg.recipe
    shapes = [(blocks, 1.0), (blocks, 0.5), (blocks + 1, 0.25)]
    return [{"blocks": b, "epochs": r.finetune_epochs, "lr": r.finetune_lr * f} for b, f in shapes[:count]]


@dataclass
class _Budget:
    """What every part of the plan reads: the folder's counts, the seconds available and what the user fixed."""

    cfg: RunConfig
    n: dict[str, int]
    available: float
    decode_one: float  # seconds to decode one image (wall, the decode pool included)
    given_size: int | None
    given_backbone: bool
    views_given: int | None
    why: list[str]

    @property
    def total(self) -> int:
        return sum(self.n.values())

    @property
    def budget(self) -> float:
        return self.cfg.recipe.time_budget


def _budget(cfg: RunConfig, index: DatasetIndex, profile, probe, costs, spent: float) -> _Budget:
    """The plan's inputs: counts, the seconds left for its steps, the options the user gave, the first reasons."""
    r = cfg.recipe
    views_given = r.cached_views if "cached_views" in r.model_fields_set else None
    if views_given is None and not r.augment.augments():
        views_given = 1  # without augmentation each image has one view, the image itself
    fig = costs.decode()
    why = [profile.sentence()]
    if spent > 0:
        why.append(f"the run's earlier process(es) took {spent:.0f} s of --time-budget {r.time_budget:g} s (--resume)")
    return _Budget(
        cfg=cfg,
        n=_counts(index),
        available=SAFETY * r.time_budget - RESERVED - (PROBE_SECONDS if probe is not None else 0.0) - spent,
        decode_one=fig["seconds_per_image"] + fig["seconds_per_megapixel"] * profile.width * profile.height / 1e6,
        given_size=cfg.data.image_size if "image_size" in cfg.data.model_fields_set else None,
        given_backbone="backbone" in cfg.model.model_fields_set,
        views_given=views_given,
        why=why,
    )


def _scratch_plan(b: _Budget, profile, probe, costs) -> tuple[dict | None, bool]:
    """The from-scratch candidate when the probe puts it near or ahead of pretrained features (None otherwise), and
    whether the pretrained backbones stay candidates."""
    cfg, r, n = b.cfg, b.cfg.recipe, b.n
    if probe is None:
        if profile.tiny or profile.grayscale >= 0.5:
            b.why.append("a from-scratch CNN was not probed")
        else:
            b.why.append("colour photos of ordinary size: the pretrained backbones are the candidates")
        return None, True
    b.why.append(probe.sentence())
    if probe.scratch_accuracy < probe.ncm_accuracy - 0.05:
        b.why.append("the from-scratch CNN is no candidate: pretrained features are clearly ahead")
        return None, True
    size = b.given_size or max(32, min(128, profile.short_side["p50"]))
    fig = costs.scratch(SCRATCH, size, cfg.model.batch_norm, r.batch_size)
    per_epoch = (
        math.ceil(n["train"] / r.batch_size) * fig["step_seconds"]
        + math.ceil(n["val"] / r.batch_size) * fig["val_batch_seconds"]
    )
    use_pretrained = probe.scratch_accuracy < probe.ncm_accuracy + 0.10
    share = SCRATCH_SHARE if use_pretrained else 1.0  # alone it may take the whole plan
    epochs = int(max(SCRATCH_MIN_EPOCHS, min(SCRATCH_EPOCHS, share * b.available // max(per_epoch, 1e-6))))
    # alone, a second network from another seed is a candidate too: averaging two is the cheapest gain left
    runs = 2 if not use_pretrained and 2 * per_epoch * epochs <= b.available else 1
    seeds = [cfg.seed + i for i in range(runs)]
    scratch = {"size": size, "epochs": epochs, "seeds": seeds, "epoch_seconds": per_epoch}
    scratch["seconds"] = b.total * b.decode_one + per_epoch * epochs * runs
    b.why.append(
        f"a from-scratch {SCRATCH} at the native {size} px is a candidate ({epochs} epochs, the best kept"
        + (f"; {runs} of them, seeds {', '.join(map(str, seeds))})" if runs > 1 else ")")
        + ("" if use_pretrained else "; the pretrained backbones are not, being clearly behind it")
    )
    return scratch, use_pretrained


def _rung_plan(b: _Budget, costs, scratch: dict | None, level, size: int, tta: bool) -> dict | None:
    """One rung of the ladder (backbones, views, rounds at `size`, flips or not) costed step by step, or None when
    it does not fit."""
    from smallvision.models.weights import resolve_weights

    cfg, n = b.cfg, b.n
    backbones, views, rounds = level
    views = b.views_given if b.views_given is not None else views
    steps = []
    if scratch is not None:
        steps.append({"step": f"from-scratch {SCRATCH} at {scratch['size']} px", "seconds": scratch["seconds"]})
    steps.append({"step": f"decode {b.total:,} images at {size} px", "seconds": b.total * b.decode_one})

    # a rung is dropped as soon as its steps so far overrun: timing the rest on a first run would spend the budget
    # on steps that cannot run (estimates only add up, so the rung chosen is the same)
    def over() -> bool:
        return sum(s["seconds"] for s in steps) > b.available

    feature_ips = {}
    for name in backbones:  # a joined backbone (a+b) runs each of its parts once per image
        if over():
            return None
        parts = [resolve_weights(part, cfg.model.weights) for part in name.split("+")]
        feature_ips[name] = 1 / sum(1 / costs.features(spec, size) for spec in parts)
        seconds = (n["train"] + 2 * (n["val"] + n["test"])) / feature_ips[name]
        steps.append({"step": f"{name} features at {size} px + head", "seconds": seconds})
    slowest = min(backbones, key=lambda name: feature_ips[name])
    plan_rounds = _rounds(cfg, cfg.recipe.unfreeze_blocks, rounds) if "+" not in slowest else []
    # one member's val and test flipped, in fp32 (about half the feature pass's rate); more members are checked
    # against the clock when the run gets there
    tta_seconds = (n["val"] + n["test"]) * 2 / min(feature_ips.values())
    last_blocks = None
    for i, rnd in enumerate(plan_rounds, 1):
        if over():
            return None
        new = rnd["blocks"] != last_blocks
        last_blocks = rnd["blocks"]
        spec = resolve_weights(slowest, cfg.model.weights)
        rnd["seconds"], how = _round_cost(cfg, costs, spec, size, rnd, views, n, new)
        what = "more epochs" if not new else f"top {rnd['blocks']} block(s)"
        steps.append({"step": f"fine-tune round {i}: {what} at lr {rnd['lr']:.2g} {how}", "seconds": rnd["seconds"]})
    if tta:
        steps.append({"step": "flipped views of val/test (test-time augmentation)", "seconds": tta_seconds})
    estimate = sum(s["seconds"] for s in steps)
    if estimate > b.available:
        return None
    return {
        "backbones": list(backbones),
        "size": size,
        "views": views,
        "rounds": plan_rounds,
        "tta": tta,
        "tta_seconds": tta_seconds if tta else 0.0,
        "steps": steps,
        "estimate_seconds": estimate,
    }


def _ladder(b: _Budget, use_pretrained: bool) -> list[tuple]:
    """The rungs to try, richest first: (level, size, tta); a backbone the user named (joined ones too) is the only
    pretrained candidate."""
    if not use_pretrained:
        return []
    levels = [((b.cfg.model.backbone,), v, k) for v, k in ((4, 3), (2, 2), (2, 1), (1, 1), (0, 0))]
    levels = levels if b.given_backbone else list(LEVELS)
    rungs = [
        (level, b.given_size or (260 if "efficientnet_lite2" in level[0] else 224), tta)
        for level in levels
        for tta in (True, False)
    ]
    rungs += [(levels[-1][:1] + (0, 0), size, False) for size in ((b.given_size,) if b.given_size else SMALL_SIZES)]
    return rungs


def _scratch_only(b: _Budget, scratch: dict) -> dict:
    """The plan when the from-scratch CNN is the only candidate: it, then flipped views."""
    tta_seconds = 2 * (b.n["val"] + b.n["test"]) * scratch["epoch_seconds"] / max(1, b.n["train"] + b.n["val"])
    chosen = {"backbones": [], "size": scratch["size"], "views": 0, "rounds": [], "tta": True}
    chosen["tta_seconds"] = tta_seconds
    chosen["steps"] = [
        {"step": f"from-scratch {SCRATCH} at {scratch['size']} px", "seconds": scratch["seconds"]},
        {"step": "flipped views of val/test (test-time augmentation)", "seconds": tta_seconds},
    ]
    chosen["estimate_seconds"] = scratch["seconds"] + tta_seconds
    chosen["rung"] = 0
    if chosen["estimate_seconds"] > b.available:
        b.why.append(
            f"--time-budget {b.budget:g} s is too small even for {SCRATCH_MIN_EPOCHS} epochs of the from-scratch CNN "
            f"(~{chosen['estimate_seconds']:.0f} s): only those run"
        )
    return chosen


def _sampled_features(b: _Budget, index: DatasetIndex, costs, rung: int) -> tuple[dict, int]:
    """When nothing fits: features of the smallest, fastest backbone on a sample of the training images, and the
    sample's size."""
    from smallvision.models.weights import resolve_weights

    n, size = b.n, b.given_size or SMALL_SIZES[-1]
    backbone = b.cfg.model.backbone if b.given_backbone else "efficientnet_lite0"
    ips = costs.features(resolve_weights(backbone, b.cfg.model.weights), size)
    held = 2 * (n["val"] + n["test"]) / ips + (n["val"] + n["test"]) * b.decode_one
    train_cap = max(len(index.classes) * 5, int((b.available - held) / (1 / ips + b.decode_one)))
    train_cap = min(train_cap, n["train"])
    seconds = held + train_cap * (1 / ips + b.decode_one)
    step = {"step": f"{backbone} features at {size} px on {train_cap:,} sampled training images", "seconds": seconds}
    chosen = {"backbones": [backbone], "size": size, "views": 0, "rounds": [], "tta": False, "tta_seconds": 0.0}
    chosen.update(steps=[step], estimate_seconds=seconds, rung=rung)
    b.why.append(
        f"--time-budget {b.budget:g} s is too small for fine-tuning or even for features of all "
        f"{n['train']:,} training images: only {backbone} features at {size} px of {train_cap:,} sampled "
        f"training images (and all of val/test) run, estimated at {seconds:.0f} s"
        + (
            f", which is still more than the {max(b.available, 0):.0f} s the budget leaves"
            if seconds > b.available
            else ""
        )
    )
    return chosen, train_cap


def _choose_rung(b: _Budget, index: DatasetIndex, costs, scratch: dict | None, use_pretrained: bool) -> tuple:
    """The richest rung that fits, else the scratch-only plan, else sampled features: (chosen, scratch, train_cap)."""
    rungs = _ladder(b, use_pretrained)
    for rung, (level, size, tta) in enumerate(rungs):
        chosen = _rung_plan(b, costs, scratch, level, size, tta)
        if chosen is not None:
            chosen["rung"] = rung
            return chosen, scratch, None
    if not use_pretrained:
        return _scratch_only(b, scratch), scratch, None
    if scratch is not None:
        b.why.append("the from-scratch CNN is dropped: with the pretrained candidates it does not fit the budget")
    chosen, train_cap = _sampled_features(b, index, costs, len(rungs))
    return chosen, None, train_cap


def make_plan(cfg: RunConfig, index: DatasetIndex, profile, probe, costs, spent: float = 0.0) -> dict:
    """The richest plan whose estimated seconds fit the budget less the `spent` seconds of the run's earlier
    processes (a resumed run planned only now): its steps, their estimates and what decides them."""
    b = _budget(cfg, index, profile, probe, costs, spent)
    scratch, use_pretrained = _scratch_plan(b, profile, probe, costs)
    chosen, scratch, train_cap = _choose_rung(b, index, costs, scratch, use_pretrained)
    if not chosen["rounds"] and chosen["backbones"] and train_cap is None:
        if any("+" in name for name in chosen["backbones"]):
            b.why.append("no fine-tuning: auto fine-tunes one backbone, not a joined one (a+b)")
        else:
            b.why.append(f"no fine-tuning: the smallest fine-tuning plan would not fit --time-budget {b.budget:g} s")
    unused = unapplied(user_set(cfg), _planned_stages(cfg, chosen, scratch))
    if unused:
        b.why.append(f"{', '.join(map(option_flag, unused))} set but not applied: this plan has no step that uses them")
    return {
        "version": PLAN_VERSION,
        "time_budget": b.budget,
        "seed": cfg.seed,
        "images": b.n,
        "profile": profile.to_dict(),
        "probe": probe.to_dict() if probe is not None else None,
        "scratch": scratch,
        **chosen,
        "train_cap": train_cap,
        "why": b.why,
        "machine": costs.machine,
        "costs": {k: costs.figures[k] for k in costs.used},  # the figures this plan read, not the whole cache
        "measured": costs.measured,
    }


def _planned_stages(cfg: RunConfig, chosen: dict, scratch: dict | None) -> list[RunConfig]:
    """The config of every stage the plan will run (each head rate, each round): which options the plan applies is
    known only once the data and budget are read, so an option no stage applies is said, not refused."""
    stages = [_scratch_cfg(cfg, scratch, seed) for seed in scratch["seeds"]] if scratch is not None else []
    for name in chosen["backbones"]:
        stages += [_member_cfg(cfg, "features", name, chosen["size"], lr=lr) for lr in _head_lrs(cfg)]
    for rnd in chosen["rounds"]:
        base = _member_cfg(cfg, "features", chosen["backbones"][0], chosen["size"], lr=_head_lrs(cfg)[0])
        stages.append(_round_cfg(cfg, base, chosen["views"], rnd))
    return stages


def plan_table(plan: dict) -> str:
    """The plan as the log shows it before the expensive work starts."""
    lines = [f"auto plan (--time-budget {plan['time_budget']:g} s; estimates from timed warm-up batches):"]
    for s in plan["steps"]:
        lines.append(f"  {s['seconds']:7.0f} s  {s['step']}")
    share = plan["estimate_seconds"] / plan["time_budget"]
    lines.append(
        f"  {plan['estimate_seconds']:7.0f} s  in all ({share:.0%} of the budget; a plan may fill {SAFETY:.0%})"
    )
    lines.append(
        "  decided on validation: the best candidate; each further round only if the last one improved; "
        "averaging candidates and flipped views only if it beats each alone"
    )
    lines.extend(f"  why: {w}" for w in plan["why"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- running it


@dataclass
class Candidate:
    """One model auto trained: its network, its probabilities on every split, and how it got there."""

    name: str
    cfg: RunConfig
    model: object
    specs: list | None
    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    history: list[dict]
    best_epoch: int
    trainable: list[str]
    size: int
    flipped: dict[str, np.ndarray] = field(default_factory=dict)
    form: object | None = None  # the model's checked fast form for flipped views, built once (seconds each)
    stages: list[tuple[str, RunConfig]] = field(default_factory=list)  # (history.csv's stage, the config it ran)

    @property
    def val(self) -> float:
        """Validation accuracy of this candidate's probabilities."""
        return _accuracy(self.probs["val"], self.labels["val"])


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The validation score every choice of auto compares (the task's selection score)."""
    return SINGLE_LABEL.score(probs, labels)


def _member_cfg(cfg: RunConfig, recipe: str, backbone: str, size: int, **recipe_values) -> RunConfig:
    """The run's config as one candidate's recipe sees it: the user's options that recipe applies, plus auto's."""
    from smallvision.config import build_config

    values = nested({p: v for p, v in user_set(cfg).items() if p.startswith("data.") or recipe in APPLIES[p].recipes})
    values.setdefault("data", {})["image_size"] = size
    values.setdefault("model", {})["backbone"] = backbone
    values.setdefault("recipe", {}).update({"name": recipe, **recipe_values})
    member = build_config(values, origin="auto", conditions=False)  # checked against auto already
    member.out = cfg.out
    member.seed = cfg.seed
    return member


def _head_lrs(cfg: RunConfig) -> tuple[float, ...]:
    """The head learning rates tried on cached features: --lr when set, else HEAD_LRS."""
    return (cfg.recipe.lr,) if "lr" in cfg.recipe.model_fields_set else HEAD_LRS


def _scratch_cfg(cfg: RunConfig, s: dict, seed: int) -> RunConfig:
    """The config a planned from-scratch CNN trains with: the native size, its planned epochs, its seed."""
    member = _member_cfg(cfg, "scratch", SCRATCH, s["size"], epochs=s["epochs"])
    member.seed = seed
    return member


def _round_cfg(cfg: RunConfig, base: RunConfig, views: int, rnd: dict) -> RunConfig:
    """The config a fine-tuning round trains with: the base candidate's head (backbone, size, rate, epochs) and the
    round's blocks, rate and epochs."""
    r = base.recipe
    return _member_cfg(
        cfg,
        "finetune",
        base.model.backbone,
        base.data.image_size,
        cached_views=views,
        lr=r.lr,
        epochs=r.epochs,
        finetune_lr=rnd["lr"],
        finetune_epochs=rnd["epochs"],
        unfreeze_blocks=rnd["blocks"],
    )


def _sampled(index: DatasetIndex, cap: int | None, seed: int) -> DatasetIndex:
    """The index with at most `cap` training images, taken stratified by class (val and test untouched)."""
    if cap is None:
        return index
    from sklearn.model_selection import train_test_split

    train = [it for it in index.items if it.split == "train"]
    if cap >= len(train):
        return index
    try:
        keep, _ = train_test_split(train, train_size=cap, stratify=[it.label for it in train], random_state=seed)
    except ValueError:  # a class too small to stratify: a plain seeded sample
        keep, _ = train_test_split(train, train_size=cap, random_state=seed)
    kept = {id(it) for it in keep}
    sub = copy.copy(index)
    sub.items = [it for it in index.items if it.split != "train" or id(it) in kept]
    sub.skipped, sub.notes = list(index.skipped), list(index.notes)
    return sub


@dataclass
class Tally:
    """What a run did, for its record: the config of every stage that ran (kept or not) and each decision made on
    validation, by kind (what the headline validation number was chosen among)."""

    ran: list[RunConfig] = field(default_factory=list)
    choices: Counter[str] = field(default_factory=Counter)


def _features_candidate(cfg, name, size, index, progress, notes, logger, tally: Tally) -> Candidate:
    """A dense head on `name`'s cached features; unless --lr is set, at the better of HEAD_LRS on validation. Each
    head rate is its own stage (history.csv, the tracker): `features NAME`, `features NAME lr RATE` when several."""
    lrs = _head_lrs(cfg)
    tried = []
    for lr in lrs:
        cand_cfg = _member_cfg(cfg, "features", name, size, lr=lr)
        stage = f"features {name}" + (f" lr {lr:g}" if len(lrs) > 1 else "")
        stage_notes: list[str] = []
        fs = recipes.feature_stage(cand_cfg, index, progress, stage_notes, logger, stage)
        tally.ran.append(cand_cfg)
        probs = recipes.feature_probs(fs)
        labels = {s: y for s, (_, y) in fs.by_split.items()}
        tried.append((_accuracy(probs["val"], labels["val"]), lr, cand_cfg, fs, probs, labels, stage_notes, stage))
    val, lr, cand_cfg, fs, probs, labels, stage_notes, stage = max(tried, key=lambda t: t[0])  # ties: the first lr
    notes.extend(stage_notes)
    if len(tried) > 1:
        tally.choices["head_lr"] += 1
        shown = ", ".join(f"lr {t[1]:g}: {t[0]:.4f}" for t in tried)
        notes.decide("head-lr", f"{name} head on cached features: kept lr {lr:g} on validation ({shown})")
    model = recipes.pretrained_model(cand_cfg, fs.specs, len(index.classes), head=copy.deepcopy(fs.head))
    model.requires_grad_(False)
    return Candidate(
        f"{name} features",
        cand_cfg,
        model,
        fs.specs,
        probs,
        labels,
        fs.history,
        fs.best_epoch,
        ["head"],
        size,
        stages=[(stage, cand_cfg)],
    )


def _scratch_candidates(cfg, plan, index, run_dir, start, progress, notes, logger, tally: Tally) -> list[Candidate]:
    """The planned from-scratch CNNs at the native size, one per planned seed."""
    from smallvision.models.backbone import scratch_backbone
    from smallvision.models.head import Head, ImageClassifier

    s = plan["scratch"]
    out = []
    for i, seed in enumerate(s["seeds"]):
        cand_cfg = _scratch_cfg(cfg, s, seed)
        stage = "scratch" if i == 0 else f"scratch{i + 1}"
        left = cfg.recipe.time_budget - TAIL - (_now() - start)  # the clock stops a network the estimate misjudged
        run = recipes.run_scratch(cand_cfg, index, run_dir, progress, logger, stage=stage, max_seconds=left)
        tally.ran.append(cand_cfg)
        notes.extend(run.notes)
        backbone = scratch_backbone(SCRATCH, s["size"], cand_cfg.model.batch_norm)
        head = Head(backbone.net.num_features, len(index.classes), cand_cfg.model.dropout, cand_cfg.model.hidden)
        model = ImageClassifier([backbone], head)
        model.load_state_dict(run.state)
        model.requires_grad_(False)
        name = f"{SCRATCH} from scratch" + (f" (seed {seed})" if len(s["seeds"]) > 1 else "")
        history = [{**row, "stage": stage} for row in run.history]
        out.append(
            Candidate(
                name,
                cand_cfg,
                model,
                None,
                run.probs,
                run.labels,
                history,
                run.best_epoch,
                ["all"],
                s["size"],
                stages=[(stage, cand_cfg)],
            )
        )
    return out


def _now() -> float:
    """The clock auto's budget checks read (one place, so a test can move it)."""
    return time.perf_counter()


def _guard(run_dir: Path, name: str, start: float, seconds: float, budget: float) -> dict:
    """Whether an optional step still fits the budget by the clock; recorded, so a resume decides the same."""
    from smallvision.training.distributed import rank_zero_decision

    def decide() -> dict:
        elapsed = _now() - start
        fits = elapsed + seconds <= budget - TAIL
        return {"run": fits, "elapsed": round(elapsed, 1), "estimate": round(seconds, 1)}

    return rank_zero_decision(run_dir / "checkpoints" / f"auto_{name}.json", decide)[0]


def _finetune(cfg, plan, base: Candidate, index, run_dir, start, progress, notes, logger, tally) -> Candidate | None:
    """Fine-tuning rounds on the best pretrained candidate, each only while the last one improved validation."""
    from smallvision.models.backbone import freeze
    from smallvision.training.fit import run_stage

    r = cfg.recipe

    def fits(i: int, rnd: dict) -> bool:
        guard = _guard(run_dir, f"round{i}", start, rnd["seconds"], r.time_budget)
        if not guard["run"]:
            notes.decide(
                "stop",
                f"stopped fine-tuning before round {i}: {guard['elapsed']:.0f} s had passed and the round "
                f"was estimated at {guard['estimate']:.0f} s, past --time-budget {r.time_budget:g}",
            )
        return guard["run"]

    if not fits(1, plan["rounds"][0]):  # checked before loading every image for it
        return None
    tune_cfg = _round_cfg(cfg, base.cfg, plan["views"], plan["rounds"][0])
    data = recipes.load_images(tune_cfg, index, progress)
    model = copy.deepcopy(base.model).requires_grad_(True)
    best_val, best_state, best = base.val, copy.deepcopy(model.state_dict()), None
    history, blocks, views, stages = list(base.history), None, None, list(base.stages)
    for i, rnd in enumerate(plan["rounds"], 1):
        if i > 1 and not fits(i, rnd):
            break
        round_cfg = _round_cfg(cfg, base.cfg, plan["views"], rnd)
        if rnd["blocks"] != blocks:
            blocks = rnd["blocks"]
            trainable = freeze(model.backbones[0], blocks)
            views = recipes.activation_views(tune_cfg, model, data, notes, progress)
        rr = round_cfg.recipe
        groups = recipes.param_groups(model, {0: trainable}, rr.lr, rr.finetune_lr, rr.layer_decay)
        stage = f"finetune{i}"
        res = run_stage(
            stage,
            model,
            groups,
            data,
            round_cfg,
            rr.finetune_epochs,
            run_dir / "checkpoints" / stage,
            progress,
            views=views,
            logger=logger,
            max_seconds=r.time_budget - TAIL - (_now() - start),  # the clock stops a round the estimate misjudged
        )
        tally.ran.append(round_cfg)
        history += [{**row, "stage": stage} for row in res.history]
        stages.append((stage, round_cfg))
        improved = res.best_accuracy > best_val + 1e-6  # Lightning reports float32: equal counts must tie
        tally.choices["finetune_round"] += 1
        notes.decide(
            "round",
            f"fine-tuning round {i} (blocks {', '.join(trainable)} at lr {rnd['lr']:.2g}, {rnd['epochs']} "
            f"epochs): best val accuracy {res.best_accuracy:.4f} at epoch {res.best_epoch}, "
            + (f"better than {best_val:.4f}" if improved else f"not better than {best_val:.4f}: stopped here"),
        )
        if not improved:
            model.load_state_dict(best_state)
            break
        best_val, best_state = res.best_accuracy, copy.deepcopy(model.state_dict())
        probs = views.probabilities() if views is not None else None
        if probs is None:
            from smallvision.prediction import probabilities

            probs = {s: probabilities(model, x) for s, (x, _) in data.items()}
        names = ["head"] + [f"backbones.0.{t}" for t in trainable]
        best = Candidate(
            f"{base.cfg.model.backbone} fine-tuned",
            tune_cfg,
            copy.deepcopy(model).requires_grad_(False),
            base.specs,
            probs,
            {s: y for s, (_, y) in data.items()},
            list(history),
            res.best_epoch,
            names,
            base.size,
            stages=list(stages),
        )
    return best


def _flipped(cand: Candidate, index: DatasetIndex, splits: tuple[str, ...]) -> None:
    """The candidate's probabilities on left-right flipped images of `splits`, in fp32 as the saved model runs (its
    fast form, checked against eager fp32 within 1e-4 by models/inference.py)."""

    from smallvision.data.cache import decoded_images
    from smallvision.models.inference import inference_form, run_batches

    todo = [s for s in splits if s not in cand.flipped and s in cand.probs]
    if not todo:
        return
    if cand.form is None:  # val is flipped to choose, then test for the kept model: trace and check it once
        cand.form = inference_form(cand.model, (3, cand.size, cand.size), 32, "fp32")
    for split in todo:
        items = [it for it in index.items if it.split == split]
        images, failed = decoded_images(
            [it.path for it in items], [it.digest for it in items], cand.size, progress=False
        )
        if failed:
            raise SmallvisionError(f"{len(failed)} {split} image(s) no longer decode; run again")
        logits = run_batches(cand.form, np.ascontiguousarray(images[:, :, ::-1]), progress=False)
        cand.flipped[split] = SINGLE_LABEL.probabilities_of(logits)


def _choose(cands: list[Candidate], plan: dict, index, notes: RunNotes, run_dir, start, budget, choices) -> tuple:
    """The best single candidate, an average of candidates, and flipped views, each kept only if it beats the rest;
    every comparison on validation is counted in `choices`."""
    ranked = sorted(cands, key=lambda c: -c.val)  # stable: ties keep the plan's order
    best = ranked[0]
    members, val = [best], best.val
    listing = ", ".join(f"{c.name} {c.val:.4f}" for c in ranked)
    notes.decide("choice", f"chose {best.name} among the candidates on validation ({listing})")
    if len(cands) > 1:
        choices["candidate"] += 1
    # averaged only with candidates fed the same images (size) whose splits hold the same images in the same order
    same = [
        c
        for c in ranked
        if c.size == best.size and all(np.array_equal(c.labels[s], best.labels[s]) for s in best.probs)
    ]
    for k in (2, 3):
        for combo in itertools.combinations(same, k):
            p = sum(c.probs["val"] for c in combo) / k
            acc = _accuracy(p, best.labels["val"])
            choices["average"] += 1
            if acc > val + 1e-9:
                members, val = list(combo), acc
    if len(members) > 1:
        notes.decide(
            "average",
            f"averaged the probabilities of {' and '.join(c.name for c in members)}: val accuracy {val:.4f}, "
            f"above each alone ({', '.join(f'{c.val:.4f}' for c in members)})",
        )
    elif len(same) > 1:
        notes.decide("average", f"no average of candidates beat {best.name} alone on validation ({best.val:.4f})")
    tta = False
    if plan["tta"]:
        guard = _guard(run_dir, "tta", start, plan["tta_seconds"] * len(members), budget)
        if guard["run"]:
            for c in members:
                _flipped(c, index, ("val",))
            p = sum(c.probs["val"] + c.flipped["val"] for c in members) / (2 * len(members))
            acc = _accuracy(p, best.labels["val"])
            tta = acc > val + 1e-9
            choices["tta"] += 1
            notes.decide(
                "tta",
                "test-time augmentation (averaging each image with its mirror image) "
                + (
                    f"kept: val accuracy {acc:.4f} against {val:.4f} without"
                    if tta
                    else f"not kept: val accuracy {acc:.4f}, not above {val:.4f} without"
                ),
            )
            if tta:
                val = acc
        else:
            notes.decide("tta", f"test-time augmentation not tried: {guard['elapsed']:.0f} s had passed")
    notes.decide(
        "final",
        f"final model: {' averaged with '.join(c.name for c in members)}"
        + (", each image averaged with its mirror image" if tta else "")
        + f", val accuracy {val:.4f}",
    )
    return members, tta


def _outcome(members: list[Candidate], tta: bool, index, notes: list[str]) -> recipes.RecipeOutcome:
    """One saved model for the chosen members (an ensemble when several) and its probabilities on every split."""
    from smallvision.models.folder import ensemble_layout, head_card

    lead = members[0]
    if tta:
        for c in members:
            _flipped(c, index, tuple(s for s in ("val", "test") if s in c.probs))
    probs = {}
    for split in [s for s in lead.probs if s != "train" or not tta]:  # flipped train images are never needed
        parts = [(c.probs[split] + c.flipped[split]) / 2 if tta else c.probs[split] for c in members]
        probs[split] = sum(parts) / len(parts)
    if len(members) > 1:
        from smallvision.models.head import ensemble

        model = ensemble([c.model for c in members], tta="hflip" if tta else None)
    else:
        model = copy.deepcopy(lead.model)
        model.tta = "hflip" if tta else None
    groups = model.head.groups if len(members) > 1 else [list(range(len(model.backbones)))]
    parts = [(recipes.backbone_cards(c.model, c.specs, c.cfg), c.trainable) for c in members]
    cards, trainable = ensemble_layout(model, groups, parts)  # equal backbones (a frozen one) shared among members
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return recipes.RecipeOutcome(
        state,
        cards,
        head_card(model.head),
        lead.history,
        lead.best_epoch,
        probs,
        lead.labels,
        notes,
        {},
        trainable,
        image_size=lead.size,
        tta="hflip" if tta else None,
    )


def run_auto(
    cfg: RunConfig, index: DatasetIndex, run_dir: Path, progress: bool = True, logger=None, start: float | None = None
) -> recipes.RecipeOutcome:
    """`auto`: read the data, plan within --time-budget, run the plan, choose on validation (see the module doc)."""
    from smallvision.data.profile import profile_data
    from smallvision.training.costs import Costs
    from smallvision.training.distributed import rank_zero_decision
    from smallvision.training.fit import resolve_precision
    from smallvision.training.probe import imagenet_distance

    start = start if start is not None else _now()
    budget = cfg.recipe.time_budget
    given_backbone = "backbone" in cfg.model.model_fields_set

    def decide() -> dict:
        profile = profile_data(index, cfg.seed)
        probe = None
        if (profile.tiny or profile.grayscale >= 0.5) and not given_backbone:
            size = max(32, min(128, profile.short_side["p50"]))
            probe = imagenet_distance(
                index, scratch_size=size, seed=cfg.seed, precision=cfg.trainer.precision, progress=False
            )
        costs = Costs(resolve_precision(cfg.trainer.precision))
        return make_plan(cfg, index, profile, probe, costs, spent=runclock.spent_before(run_dir))

    path = run_dir / "checkpoints" / PLAN_FILE
    plan, recorded = rank_zero_decision(path, decide)
    if plan.get("version") != PLAN_VERSION:
        raise SmallvisionError(
            f"{path} was written by an earlier version of auto, which this one cannot continue; start a new run: "
            f"smallvision train --config {run_dir / 'config.yaml'} --out NEW_FOLDER"
        )
    log.info("%s", plan_table(plan))
    notes = RunNotes("auto")
    notes.decide(
        "plan-file",
        f"{'reused the plan recorded in' if recorded else 'plan recorded in'} {path}: "
        + "; ".join(f"{s['step']} ~{s['seconds']:.0f} s" for s in plan["steps"])
        + f" (estimated {plan['estimate_seconds']:.0f} s of --time-budget {budget:g})",
    )
    for why in plan["why"]:
        notes.decide("plan", why)
    work = _sampled(index, plan["train_cap"], cfg.seed)
    cands: list[Candidate] = []
    tally = Tally()  # the config of every stage that ran, kept or not, and each choice made on validation
    if plan["scratch"] is not None:
        cands += _scratch_candidates(cfg, plan, work, run_dir, start, progress, notes, logger, tally)
    for name in plan["backbones"]:
        cands.append(_features_candidate(cfg, name, plan["size"], work, progress, notes, logger, tally))
    pretrained = [c for c in cands if c.specs]
    if plan["rounds"] and pretrained:
        base = max(pretrained, key=lambda c: c.val)
        tuned = _finetune(cfg, plan, base, work, run_dir, start, progress, notes, logger, tally)
        if tuned is not None:
            cands.append(tuned)
    members, tta = _choose(cands, plan, work, notes, run_dir, start, budget, tally.choices)
    unused = unapplied(user_set(cfg), tally.ran)
    if unused:
        notes.decide(
            "unapplied", f"{', '.join(map(option_flag, unused))} set but not applied: no stage that ran uses them"
        )
    if work is not index:  # held-out images that failed to decode were dropped from the sample's index only
        kept = {it.digest for it in work.items}
        index.drop({it.digest: "unreadable" for it in index.items if it.split != "train" and it.digest not in kept})
    outcome = _outcome(members, tta, work, notes)
    return dataclasses.replace(
        outcome,
        resolved=resolved_values(cfg, members, cands),
        selection=dict(tally.choices),
        decisions=notes.decisions,
    )


def resolved_values(cfg: RunConfig, members: list[Candidate], cands: list[Candidate]) -> dict:
    """config.yaml's `resolved:` for auto, from the configs its stages trained with: every value its candidates'
    stages share (and auto's own options), then each candidate, the chosen one(s) first, with its stages' own values."""
    chosen = {id(c) for c in members}
    ordered = members + [c for c in sorted(cands, key=lambda c: -c.val) if id(c) not in chosen]
    flats = [stage_values(s) for c in ordered for _, s in c.stages]
    own = stage_values(cfg)
    common = {}
    for path in APPLIES:
        if path == "recipe.name" or APPLIES[path].recipes == PLANNING:
            common[path] = own[path]
            continue
        seen = [f[path] for f in flats if path in f]
        if seen and all(v == seen[0] for v in seen):
            common[path] = seen[0]
    candidates = [
        {
            "name": c.name,
            "chosen": id(c) in chosen,
            "val_accuracy": round(c.val, 4),
            "stages": [
                {"stage": stage, **nested({p: v for p, v in stage_values(s).items() if common.get(p, ()) != v})}
                for stage, s in c.stages
            ],
        }
        for c in ordered
    ]
    return {**nested(common), "candidates": candidates}
