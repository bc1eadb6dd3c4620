"""auto's plan, made up front from the data, the measured costs and the budget: which candidates, at which size,
which fine-tuning rounds and whether test-time augmentation; and the config each planned stage trains with."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

from smallvision.config import APPLIES, RunConfig, nested, option_flag, unapplied, user_set
from smallvision.data.index import DatasetIndex

log = logging.getLogger(__name__)


PLAN_FILE = "auto_plan.json"
PLAN_VERSION = 3  # 3: fine-tuning rounds start at three tenths of --lr (2: a tenth); step keys and `actual` default
SCRATCH = "small_cnn"
HEAD_LRS = (1e-3, 3e-3)  # head learning rates tried on cached features (seconds each); 3e-3 won on hymenoptera/monkeys
TAIL = 15.0  # seconds a clock check keeps for saving the model, evaluation and the report
FOLDS = 5  # k of the heads' k-fold cross-validation (auto/crossval.py) on a small validation split
SMALL_VAL = 1000  # validation splits below this decide head choices by cross-validation: one image moves 0.1% or more
SAFETY = 0.9  # share of the budget the plan's estimates may fill: estimates err (a from-scratch stage's fixed part
# is not costed: 2 s against its 30 epochs), saving takes time
RESERVED = 45.0  # seconds kept for scanning, timing the steps (on a machine's first run), saving, the report
PROBE_SECONDS = 15.0  # what reading the data and the probe may take before the plan is made
SCRATCH_EPOCHS = 30  # the cosine schedule runs to its end (the best epoch is kept): early stopping cut it short
SCRATCH_MIN_EPOCHS = 5
SCRATCH_CAP = 128  # auto's from-scratch candidate trains at the native size, at most this
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
# fine-tuning rounds in order: (block groups added to --unfreeze-blocks, share of --finetune-lr); a level's rounds are
# the first of these, and what the budget leaves buys the next one (a block more at half the rate)
ROUND_SHAPES = ((0, 1.0), (0, 0.5), (1, 0.25), (2, 0.125))


@dataclass
class Step:
    """One costed step of the plan, as the plan table, the run's notes and the report show it."""

    step: str
    seconds: float
    key: str = ""  # what the run's ledger matches it by: scratch, decode, features NAME, round I, tta
    spare: bool = False  # runs only if time is left when the run gets there: not in the plan's estimate


@dataclass
class Round:
    """A fine-tuning round: the top `blocks` block groups for `epochs` epochs at `lr`, and its estimated seconds."""

    blocks: int
    epochs: int
    lr: float
    seconds: float = 0.0
    continues: bool = False  # added by the run: the round before it was still improving at its last epoch
    setup: float = 0.0  # of `seconds`, caching the round's activations: a shortened round pays it, a continuation not
    stage: float = 0.0  # of `seconds`, the fixed part (trainer, checkpoints, the verdict's pass): every round pays it
    remade: float = 1.0  # the factor the clock scaled `seconds` by as the round started (execute `_fitted_round`):
    # 1 in the plan, whose rounds are the cost model's figures

    def seconds_for(self, epochs: int) -> float:
        """Its estimate when `epochs` of its epochs run: the setup and the stage's fixed part are paid whatever."""
        fixed = self.setup + self.stage
        return fixed + (self.seconds - fixed) * epochs / self.epochs


@dataclass
class ScratchPlan:
    """The from-scratch candidate: its native size, epochs, one network per seed, and its estimated seconds."""

    size: int
    epochs: int
    seeds: list[int]
    epoch_seconds: float
    seconds: float = 0.0


@dataclass
class Rung:
    """What the plan runs besides the scratch candidate: backbones' features at one size, the cached views and
    fine-tuning rounds, whether flipped views are tried, and the costed steps of all of it."""

    backbones: list[str]
    size: int
    views: int
    rounds: list[Round]
    tta: bool
    tta_seconds: float
    steps: list[Step]
    estimate_seconds: float
    rung: int = 0
    runner_up: list[Round] = field(default_factory=list)  # the second-best backbone's own rounds, when time allows
    tapped: bool = False  # the feature passes keep round 1's unaugmented activations (caching/taps.py; a first run)


@dataclass
class Plan(Rung):
    """auto's plan as checkpoints/auto_plan.json records it: the chosen rung, the scratch candidate, the training
    sample's cap, what decided it (`why`), and the machine, profile, probe and cost figures it was made from."""

    version: int = PLAN_VERSION
    time_budget: float = 0.0
    seed: int = 0
    images: dict[str, int] = field(default_factory=dict)
    profile: dict = field(default_factory=dict)
    probe: dict | None = None
    scratch: ScratchPlan | None = None
    train_cap: int | None = None
    folds: int = 0  # k of the heads' cross-validation (auto/crossval.py); 0: validation decides them alone
    why: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    costs: dict = field(default_factory=dict)
    measured: list = field(default_factory=list)
    actual: list = field(default_factory=list)  # each step's estimate against the seconds it took (clock.Ledger)

    def to_dict(self) -> dict:
        """The plan as JSON values (auto_plan.json)."""
        return asdict(self)

    def seconds_of(self, *keys: str) -> float:
        """The planned seconds of the steps with these keys."""
        return sum(s.seconds for s in self.steps if s.key in keys)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan read back from auto_plan.json (of this PLAN_VERSION)."""
        values = dict(d)
        values["rounds"] = [Round(**r) for r in values["rounds"]]
        values["runner_up"] = [Round(**r) for r in values.get("runner_up", [])]
        values["steps"] = [Step(**s) for s in values["steps"]]
        values["scratch"] = ScratchPlan(**values["scratch"]) if values.get("scratch") else None
        return cls(**values)


def _counts(index: DatasetIndex) -> dict[str, int]:
    out = {"train": 0, "val": 0, "test": 0}
    for it in index.items:
        out[it.split] += 1
    return out


def _epoch_seconds(fig: dict, n: dict[str, int], batch: int) -> float:
    """One epoch of a round: every training batch and every validation batch."""
    return math.ceil(n["train"] / batch) * fig["step_seconds"] + math.ceil(n["val"] / batch) * fig["val_batch_seconds"]


def _augmented_views(cfg: RunConfig, views: int) -> int:
    """Augmented views the activation cache makes of each training image (none when nothing augments)."""
    return views if cfg.recipe.augment.augments() else 0


def _views_seconds(cfg: RunConfig, costs, spec, size: int, n: dict[str, int], views: int, tapped: bool) -> float:
    """Caching a round's activations as caching/activations.py `compute_views` does: the frozen part's form built
    (and an fp32 one for val/test when the views are bf16: its rate scaled as the fp32 form's figure scales the whole
    backbone's, its build taken as the first's), every training image once plus each augmented view of it (each
    augmented on the CPU first), and val/test once; `tapped`: the unaugmented ones were kept by the feature pass
    (caching/taps.py), so only the augmented views run, through the one form they need."""
    from smallvision.caching.activations import view_precision

    fig, augmented = costs.bottom(spec, size), _augmented_views(cfg, views)
    rate = fig["bottom_images_per_second"]
    aug = n["train"] * augmented * costs.augment(cfg.recipe.augment, size) if augmented else 0.0
    if tapped:
        return (fig["bottom_build_seconds"] + n["train"] * augmented / rate + aug) if augmented else 0.0
    forms, held_rate = 1, rate
    if view_precision(costs.precision) != "fp32":
        forms, held_rate = 2, rate * costs.fp32_form(spec, size)["images_per_second"] / costs.features(spec, size)
    train = n["train"] * (1 + augmented) / rate + aug
    return forms * fig["bottom_build_seconds"] + train + (n["val"] + n["test"]) / held_rate


def tap_seconds(cfg: RunConfig, costs, backbone: str, size: int) -> float:
    """What splitting `backbone`'s feature pass at round 1's boundary adds to it (caching/taps.py): per arithmetic
    it runs in (training features, then val/test in fp32 when those differ), the frozen part's form built besides
    the top's, which replaces the whole network's (taken as costing as much: the unsplit pass's build is already in
    the feature step)."""
    from smallvision.caching.features import feature_precision
    from smallvision.models.weights import resolve_weights

    spec = resolve_weights(backbone, cfg.model.weights)
    arithmetics = 1 if feature_precision(costs.precision) == feature_precision("32-true") else 2
    return arithmetics * costs.bottom(spec, size)["bottom_build_seconds"]


def tap_pays(cfg: RunConfig, costs, backbones: list[str], size: int, views: int, n: dict[str, int]) -> bool:
    """Whether the feature passes keep round 1's unaugmented activations for every one of `backbones` (the boundary
    below the top --unfreeze-blocks groups; see caching/taps.py): when they fit --memory-budget beside one candidate's
    round-1 cache (the others' rows wait for their own rounds), in the arithmetic round 1 caches them in (the
    training features' must be the round's views': on a GPU features run in fp16), for a round 1 on cached
    activations, and when what round 1 then skips is at least twice what splitting each pass costs (`tap_seconds`;
    twice, as not every candidate is fine-tuned)."""
    from smallvision.caching.activations import cache_bytes, view_precision
    from smallvision.caching.features import feature_precision
    from smallvision.models.weights import resolve_weights

    precision, budget = view_precision(costs.precision), cfg.trainer.memory_budget * 1e9
    if not backbones or cfg.recipe.cached_views == 0 or any("+" in name for name in backbones):
        return False
    if feature_precision(costs.precision).removeprefix("cuda-") != precision:
        return False
    kept, caches = [], []
    for name in backbones:
        spec = resolve_weights(name, cfg.model.weights)
        values = costs.activations(spec, size, cfg.recipe.unfreeze_blocks)
        if not values:
            return False
        kept.append(cache_bytes(values, n, 0, precision))
        caches.append(cache_bytes(values, n, _augmented_views(cfg, max(views, 1)), precision))
        untapped, tapped = (_views_seconds(cfg, costs, spec, size, n, views, t) for t in (False, True))
        if untapped - tapped < 2 * tap_seconds(cfg, costs, name, size):
            return False
    # the peak: one candidate's round-1 cache while the others' kept rows wait for their own turn
    return max(sum(kept) - k + c for k, c in zip(kept, caches, strict=True)) <= budget


def _round_cost(cfg: RunConfig, costs, spec, size: int, rnd: Round, views: int, n: dict, new: bool | str) -> tuple:
    """Seconds of a fine-tuning round as it will run, at --batch-size, of them the setup (caching its activations)
    and the fixed part (the stage's, and the validation pass its verdict reads after it), and how: on cached
    activations when they fit --memory-budget (as steps.activation_views decides), else on full images, every step
    the whole network. `new`: the round caches its own activations; "tapped" when the feature pass kept the
    unaugmented ones."""
    from smallvision.caching.activations import cache_bytes, view_precision

    batch, budget = cfg.recipe.batch_size, cfg.trainer.memory_budget
    values = costs.activations(spec, size, rnd.blocks) if views else 0
    how = "on full images (--cached-views 0)" if not views else "on full images (no cacheable boundary)"
    if values:
        need = cache_bytes(values, n, _augmented_views(cfg, views), view_precision(costs.precision))
        if need <= budget * 1e9:
            fig = costs.finetune(spec, size, rnd.blocks, batch)
            setup = _views_seconds(cfg, costs, spec, size, n, views, new == "tapped") if new else 0.0
            stage = _fixed(costs, fig, n, batch)
            seconds = setup + stage + rnd.epochs * _epoch_seconds(fig, n, batch)
            return seconds, setup, stage, f"on cached activations ({need / 1e9:.2g} GB)"
        how = f"on full images (cached activations: {need / 1e9:.2g} GB, over --memory-budget {budget:g} GB)"
    fig = costs.finetune_images(spec, size, rnd.blocks, batch)
    stage = _fixed(costs, fig, n, batch)
    return stage + rnd.epochs * _epoch_seconds(fig, n, batch), 0.0, stage, how


def _fixed(costs, fig: dict, n: dict[str, int], batch: int) -> float:
    """What a round pays whatever its epochs: the stage's fixed part, and one more validation pass, the one its
    verdict reads (execute.py `_val_probs`: the best epoch's probabilities)."""
    return costs.network_stage() + math.ceil(n["val"] / batch) * fig["val_batch_seconds"]


def _rounds(cfg: RunConfig, count: int) -> list[Round]:
    """The first `count` fine-tuning rounds (ROUND_SHAPES): the top blocks, then as many epochs more at half the rate,
    then a block more at each halving."""
    r = cfg.recipe
    return [Round(r.unfreeze_blocks + more, r.finetune_epochs, r.finetune_lr * f) for more, f in ROUND_SHAPES[:count]]


def _round_steps(
    cfg: RunConfig, n: dict, costs, backbone: str, size: int, views: int, rounds: list[Round], who: str, tapped: bool
):
    """Each round costed as it will run on `backbone` (its `seconds` set), as plan steps keyed `{who}round I`; one at
    a time, so a caller that stops early never has the later rounds' figures timed. `tapped`: round 1's unaugmented
    activations come from the feature pass (`tap_pays`)."""
    from smallvision.models.weights import resolve_weights

    spec, last_blocks = None, None
    for i, rnd in enumerate(rounds, 1):
        spec = spec or resolve_weights(backbone, cfg.model.weights)  # only once there is a round (not a joined one)
        new, last_blocks = rnd.blocks != last_blocks, rnd.blocks
        new = "tapped" if new and tapped and i == 1 else new
        rnd.seconds, rnd.setup, rnd.stage, how = _round_cost(cfg, costs, spec, size, rnd, views, n, new)
        what = "more epochs" if not new else f"top {rnd.blocks} block(s)"
        full = cfg.recipe.finetune_epochs
        what += f" ({rnd.epochs} of {full} epochs)" if rnd.epochs < full else ""
        yield Step(f"{who}fine-tune round {i}: {what} at lr {rnd.lr:.2g} {how}", rnd.seconds, f"{who}round {i}")


def rounds_on(
    cfg: RunConfig, plan: Plan, costs, backbone: str, rounds: list[Round], tapped: bool | None = None
) -> list[Round]:
    """`rounds` costed on `backbone`, the candidate that runs them: the plan costs every candidate's rounds on its
    slowest backbone, before validation says which candidate is fine-tuned (round 1 tapped as the plan says, unless
    `tapped` says otherwise). Pure, as make_plan is."""
    out = [dataclasses.replace(r) for r in rounds]
    tapped = plan.tapped if tapped is None else tapped
    list(_round_steps(cfg, plan.images, costs, backbone, plan.size, plan.views, out, "", tapped))
    return out


@dataclass
class _Budget:
    """What every part of the plan reads: the folder's counts, the seconds available and what the user fixed."""

    cfg: RunConfig
    n: dict[str, int]
    available: float
    decode_one: float  # seconds to decode one image (wall, the decode pool included)
    head_seconds: float  # training a candidate's heads on its cached features (every rate, every loss)
    given_size: int | None
    given_backbone: bool
    views_given: int | None
    why: list[str]
    folds: int  # k of the heads' k-fold cross-validation (crossval.py), 0 when validation decides alone

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
    n = _counts(index)
    m = cfg.model
    per_loss = [
        costs.head(len(index.classes), index.task == "multi", r.batch_size, loss, m.dropout, m.hidden or 0)
        for loss in head_losses(cfg, index)
    ]
    folds = FOLDS if cross_validates(cfg, n, len(head_lrs(cfg)) * len(per_loss)) else 0
    seen = n["train"] + n["val"]  # each epoch of the head: train, then val; of a fold's head: all but its fold
    fold_rows = seen * (folds - 1) / folds if folds else 0.0
    heads = len(head_lrs(cfg)) * sum(
        _head_fit(f, r.epochs, seen) + folds * _head_fit(f, r.epochs, fold_rows) for f in per_loss
    )
    why = [profile.sentence()]
    if spent > 0:
        why.append(f"the run's earlier process(es) took {spent:.0f} s of --time-budget {r.time_budget:g} s (--resume)")
    return _Budget(
        cfg=cfg,
        n=n,
        available=SAFETY * r.time_budget - RESERVED - (PROBE_SECONDS if probe is not None else 0.0) - spent,
        decode_one=fig["seconds_per_image"] + fig["seconds_per_megapixel"] * profile.width * profile.height / 1e6,
        head_seconds=heads,
        given_size=cfg.data.image_size if "image_size" in cfg.data.model_fields_set else None,
        given_backbone="backbone" in cfg.model.model_fields_set,
        views_given=views_given,
        why=why,
        folds=folds,
    )


def _head_fit(fig: dict, epochs: int, images: float) -> float:
    """One head's fit on cached features from its figure: the fixed part, then each epoch over `images` rows."""
    return fig["stage_seconds"] + epochs * (fig["epoch_seconds"] + fig["sample_epoch_seconds"] * images)


def _scratch_plan(b: _Budget, profile, probe, costs) -> tuple[ScratchPlan | None, bool]:
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
    size = b.given_size or profile.native_size(SCRATCH_CAP) or SCRATCH_CAP
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
    scratch = ScratchPlan(size, epochs, seeds, per_epoch, b.total * b.decode_one + per_epoch * epochs * runs)
    b.why.append(
        f"a from-scratch {SCRATCH} at the native {size} px is a candidate ({epochs} epochs, the best kept"
        + (f"; {runs} of them, seeds {', '.join(map(str, seeds))})" if runs > 1 else ")")
        + ("" if use_pretrained else "; the pretrained backbones are not, being clearly behind it")
    )
    return scratch, use_pretrained


def _rung_plan(b: _Budget, costs, scratch: ScratchPlan | None, level, size: int, tta: bool) -> Rung | None:
    """One rung of the ladder (backbones, views, rounds at `size`, flips or not) costed step by step, or None when
    it does not fit."""

    cfg, n = b.cfg, b.n
    backbones, views, rounds = level
    views = b.views_given if b.views_given is not None else views
    steps = []
    if scratch is not None:
        steps.append(Step(f"from-scratch {SCRATCH} at {scratch.size} px", scratch.seconds, "scratch"))
    steps.append(Step(f"decode {b.total:,} images at {size} px", b.total * b.decode_one, "decode"))

    # a rung is dropped as soon as its steps so far overrun: timing the rest on a first run would spend the budget
    # on steps that cannot run (estimates only add up, so the rung chosen is the same)
    def over() -> bool:
        return sum(s.seconds for s in steps) > b.available

    for name in backbones:  # a joined backbone (a+b) runs each of its parts once per image
        if over():
            return None
        parts = len(name.split("+"))
        seconds = n["train"] / feature_rate(cfg, costs, name, size) + b.head_seconds * parts
        seconds += _held_out_seconds(b, costs, name, size)
        steps.append(Step(f"{name} features at {size} px + head", seconds, f"features {name}"))
    costed_on = slowest(cfg, costs, list(backbones), size)
    plan_rounds = _rounds(cfg, rounds) if "+" not in costed_on else []
    if over():
        return None
    tapped = bool(plan_rounds) and tap_pays(cfg, costs, list(backbones), size, views, n)
    if tapped:
        _split_passes(cfg, costs, steps, size, 1)
    for step in _round_steps(cfg, n, costs, costed_on, size, views, plan_rounds, "", tapped):  # only while it fits
        steps.append(step)
        if over():
            return None
    # one member's val and test flipped, on the slowest backbone; more members are checked against the clock when
    # the run gets there
    tta_seconds = flip_seconds(cfg, costs, costed_on, size, n["val"] + n["test"]) if tta else 0.0
    if tta:
        steps.append(Step("flipped views of val/test (test-time augmentation)", tta_seconds, "tta"))
    estimate = sum(s.seconds for s in steps)
    if estimate > b.available:
        return None
    return Rung(list(backbones), size, views, plan_rounds, tta, tta_seconds, steps, estimate, tapped=tapped)


def _held_out_seconds(b: _Budget, costs, backbone: str, size: int) -> float:
    """Val and test features of `backbone`, computed in fp32 as the saved model computes them (recipes/steps.py
    `feature_stage`), its fp32 form built first; the training features' own form is built too when they run in
    another arithmetic."""
    from smallvision.caching.features import feature_precision

    forms = 1 if feature_precision(costs.precision) == feature_precision("32-true") else 2
    held = b.n["val"] + b.n["test"]
    return sum(
        forms * f["build_seconds"] + held / f["images_per_second"] for f in _fp32_forms(b.cfg, costs, backbone, size)
    )


def _fp32_forms(cfg: RunConfig, costs, backbone: str, size: int) -> list[dict]:
    """The fp32 form figures of each part of `backbone` (a joined a+b runs both)."""
    from smallvision.models.weights import resolve_weights

    return [costs.fp32_form(resolve_weights(part, cfg.model.weights), size) for part in backbone.split("+")]


def flip_seconds(cfg: RunConfig, costs, backbone: str, size: int, images: int) -> float:
    """Seconds to flip `images` through one member on `backbone` in fp32, as the saved model runs: its fp32 form
    built, then the images at that form's rate. Pure, as make_plan is."""
    return sum(f["build_seconds"] + images / f["images_per_second"] for f in _fp32_forms(cfg, costs, backbone, size))


def _split_passes(cfg: RunConfig, costs, steps: list[Step], size: int, sign: int) -> float:
    """Add (`sign` 1) or take back (-1) what splitting each feature pass at round 1's boundary costs (`tap_seconds`)
    in the plan's feature steps; the seconds added."""
    added = 0.0
    for step in steps:
        if step.key.startswith("features "):
            extra = sign * tap_seconds(cfg, costs, step.key.removeprefix("features "), size)
            step.seconds, added = step.seconds + extra, added + extra
    return added


def _filled_split(b: _Budget, costs, chosen: Rung) -> None:
    """`_filled`, for a rung without rounds with its feature passes split for the round 1 it may buy, when that pays
    (`tap_pays`) and fits; taken back when no round fits after all."""
    views = max(chosen.views, 1) if b.views_given is None else chosen.views
    if not chosen.rounds and tap_pays(b.cfg, costs, chosen.backbones, chosen.size, views, b.n):
        chosen.estimate_seconds += _split_passes(b.cfg, costs, chosen.steps, chosen.size, 1)
        chosen.tapped = True
    if chosen.tapped and chosen.estimate_seconds > b.available:
        chosen.estimate_seconds += _split_passes(b.cfg, costs, chosen.steps, chosen.size, -1)
        chosen.tapped = False
    _filled(b, costs, chosen)
    if chosen.tapped and not chosen.rounds:
        chosen.estimate_seconds += _split_passes(b.cfg, costs, chosen.steps, chosen.size, -1)
        chosen.tapped = False


def feature_rate(cfg: RunConfig, costs, backbone: str, size: int) -> float:
    """Images per second through `backbone`'s feature pass at `size` (a joined one runs each of its parts)."""
    from smallvision.models.weights import resolve_weights

    return 1 / sum(1 / costs.features(resolve_weights(part, cfg.model.weights), size) for part in backbone.split("+"))


def slowest(cfg: RunConfig, costs, backbones: list[str], size: int) -> str:
    """The backbone whose features come slowest at `size`: the one a plan costs every round on."""
    return min(backbones, key=lambda name: feature_rate(cfg, costs, name, size))


def timing_estimate(cfg: RunConfig, plan: Plan, costs, backbone: str, make: Callable) -> float:
    """Seconds that timing the figures `make(costs)` reads for `backbone` and this machine has not measured will take
    (`costs.planned` times them): what timing the same figures of the backbone the plan costed rounds on took, scaled
    by the square root of the two backbones' feature rates (timing a figure builds and traces a form, which a
    backbone's size barely moves, then trains a few steps, which it moves as it moves the feature pass). Unscaled,
    lite2's figures foretold what timing lite0's and lite1's took at x0.67-0.76 on four held-out folders (46ca439,
    six rows); the scaling was fitted to those rows. 0 (no estimate) when the plan's own backbone runs them or a
    figure it needs is not on record (a cache that could not be written, a resume on another machine). Times
    nothing."""
    from smallvision.auto.costs import MissingFigure, timing_seconds

    try:
        like = slowest(cfg, costs, plan.backbones, plan.size)
        seconds = timing_seconds(make, costs, backbone, like) if like != backbone else None
        if not seconds:
            return 0.0
        rate = [feature_rate(cfg, costs, name, plan.size) for name in (like, backbone)]
    except MissingFigure:
        return 0.0
    return seconds * math.sqrt(rate[0] / rate[1])


def _filled(b: _Budget, costs, chosen: Rung) -> None:
    """What the chosen rung leaves of the budget, spent in order of value while it fits: the best candidate's next
    rounds (more epochs at half the rate, then a block more at each halving; the last as many epochs as fit), then the
    runner-up backbone's own rounds (an average of two fine-tuned networks is kept when validation says so). Costed
    on the slowest backbone, as the rounds are; each runs only if the clock still allows it when the run gets there,
    and a round only while the one before it improved."""
    if not chosen.backbones or any("+" in name for name in chosen.backbones):
        return
    costed = partial(_round_steps, b.cfg, b.n, costs, slowest(b.cfg, costs, chosen.backbones, chosen.size), chosen.size)

    def add(steps: list[Step], spare: bool = False) -> bool:
        extra = sum(s.seconds for s in steps)
        if not spare and chosen.estimate_seconds + extra > b.available:
            return False
        at = len(chosen.steps) - chosen.tta  # before the flipped views, which come last
        chosen.steps[at:at] = [dataclasses.replace(s, spare=spare) for s in steps]
        chosen.estimate_seconds += 0.0 if spare else extra
        return True

    # a rung without rounds caches no views; its first round runs on cached activations, not on full images
    views = max(chosen.views, 1) if not chosen.rounds and b.views_given is None else chosen.views
    while (count := len(chosen.rounds)) < len(ROUND_SHAPES):
        more = _rounds(b.cfg, count + 1)
        for epochs in range(more[-1].epochs, 0, -1):  # the whole round, else as many epochs of it as fit
            more[-1].epochs = epochs
            step = list(costed(views, more, "", chosen.tapped))[-1]
            if add([step]):
                chosen.rounds = more
                what = step.step.split(": ", 1)[1]
                b.why.append(f"the budget left buys fine-tuning round {count + 1}: {what}")
                break
        if chosen.rounds is not more or epochs < b.cfg.recipe.finetune_epochs:
            break
    if chosen.rounds:
        chosen.views = views
    if len(chosen.backbones) < 2:
        return
    chosen.runner_up = _rounds(b.cfg, len(chosen.rounds))
    runner_up = list(costed(views, chosen.runner_up, "runner-up ", chosen.tapped))
    fit = next((k for k in range(len(runner_up), 0, -1) if add(runner_up[:k])), 0)
    if fit:
        b.why.append(
            f"the budget left buys the runner-up backbone's own {fit} fine-tuning round(s), to be averaged with the "
            "best when validation says so"
        )
    if len(chosen.backbones) > 2:
        b.why.append(
            "the third backbone's own fine-tuning rounds follow the runner-up's, in the same shapes, only on time "
            "left (not in the plan): three fine-tuned networks can be averaged when validation says so"
        )
    if fit < len(runner_up):
        add(runner_up[fit:], spare=True)
        b.why.append(
            f"the runner-up backbone's fine-tuning round(s) {fit + 1}-{len(runner_up)} run only if time is left (when "
            "the best's rounds stop early or the steps take less than their estimates), each shortened to what the "
            "clock allows"
        )


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


def _scratch_only(b: _Budget, scratch: ScratchPlan) -> Rung:
    """The plan when the from-scratch CNN is the only candidate: it, then flipped views."""
    tta_seconds = 2 * (b.n["val"] + b.n["test"]) * scratch.epoch_seconds / max(1, b.n["train"] + b.n["val"])
    steps = [
        Step(f"from-scratch {SCRATCH} at {scratch.size} px", scratch.seconds, "scratch"),
        Step("flipped views of val/test (test-time augmentation)", tta_seconds, "tta"),
    ]
    chosen = Rung([], scratch.size, 0, [], True, tta_seconds, steps, scratch.seconds + tta_seconds)
    if chosen.estimate_seconds > b.available:
        b.why.append(
            f"--time-budget {b.budget:g} s is too small even for {SCRATCH_MIN_EPOCHS} epochs of the from-scratch CNN "
            f"(~{chosen.estimate_seconds:.0f} s): only those run"
        )
    return chosen


def _sampled_features(b: _Budget, index: DatasetIndex, costs, rung: int) -> tuple[Rung, int]:
    """When nothing fits: features of the smallest, fastest backbone on a sample of the training images, and the
    sample's size."""
    n, size = b.n, b.given_size or SMALL_SIZES[-1]
    backbone = b.cfg.model.backbone if b.given_backbone else "efficientnet_lite0"
    ips = feature_rate(b.cfg, costs, backbone, size)
    held = _held_out_seconds(b, costs, backbone, size) + (n["val"] + n["test"]) * b.decode_one + b.head_seconds
    train_cap = max(len(index.classes) * 5, int((b.available - held) / (1 / ips + b.decode_one)))
    train_cap = min(train_cap, n["train"])
    seconds = held + train_cap * (1 / ips + b.decode_one)
    what = f"{backbone} features at {size} px on {train_cap:,} sampled training images"
    step = Step(what, seconds, f"features {backbone}")
    chosen = Rung([backbone], size, 0, [], False, 0.0, [step], seconds, rung)
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


def _choose_rung(b: _Budget, index: DatasetIndex, costs, scratch: ScratchPlan | None, use_pretrained: bool) -> tuple:
    """The richest rung that fits, else the scratch-only plan, else sampled features: (chosen, scratch, train_cap)."""
    rungs = _ladder(b, use_pretrained)
    for rung, (level, size, tta) in enumerate(rungs):
        chosen = _rung_plan(b, costs, scratch, level, size, tta)
        if chosen is not None:
            chosen.rung = rung
            return chosen, scratch, None
    if not use_pretrained:
        return _scratch_only(b, scratch), scratch, None
    if scratch is not None:
        b.why.append("the from-scratch CNN is dropped: with the pretrained candidates it does not fit the budget")
    chosen, train_cap = _sampled_features(b, index, costs, len(rungs))
    return chosen, None, train_cap


def make_plan(cfg: RunConfig, index: DatasetIndex, profile, probe, costs, spent: float = 0.0) -> Plan:
    """The richest plan whose estimated seconds fit the budget less the `spent` seconds of the run's earlier
    processes (a resumed run planned only now): its steps, their estimates and what decides them. Pure: it reads
    `costs` and times nothing (a figure not measured yet raises costs.MissingFigure; costs.planned times it)."""
    b = _budget(cfg, index, profile, probe, costs, spent)
    scratch, use_pretrained = _scratch_plan(b, profile, probe, costs)
    chosen, scratch, train_cap = _choose_rung(b, index, costs, scratch, use_pretrained)
    if train_cap is None:  # a sampled training set is all the budget allows
        _filled_split(b, costs, chosen)
    if chosen.tapped and chosen.rounds:
        b.why.append(
            "the feature passes keep fine-tuning round 1's boundary activations of the images they compute (within "
            "--memory-budget), so on a folder's first run round 1 does not run its frozen layers on those images "
            "again (only on their augmented views)"
        )
    if not chosen.rounds and chosen.backbones and train_cap is None:
        if any("+" in name for name in chosen.backbones):
            b.why.append("no fine-tuning: auto fine-tunes one backbone, not a joined one (a+b)")
        else:
            b.why.append(f"no fine-tuning: the smallest fine-tuning plan would not fit --time-budget {b.budget:g} s")
    folds = _folds(b, index, chosen, train_cap)
    unused = unapplied(user_set(cfg), _planned_stages(cfg, chosen, scratch))
    if unused:
        b.why.append(f"{', '.join(map(option_flag, unused))} set but not applied: this plan has no step that uses them")
    return Plan(
        **vars(chosen),
        time_budget=b.budget,
        seed=cfg.seed,
        images=b.n,
        profile=profile.to_dict(),
        probe=probe.to_dict() if probe is not None else None,
        scratch=scratch,
        train_cap=train_cap,
        folds=folds,
        why=b.why,
        machine=costs.machine,
        costs={k: costs.figures[k] for k in costs.used},  # the figures this plan read, not the whole cache
        measured=costs.measured,
    )


def cross_validates(cfg: RunConfig, n: dict[str, int], choices: int) -> bool:
    """Whether auto decides between its `choices` heads per backbone by cross-validation: a small validation split,
    more than one rate or loss to choose from (the backbone ranking reuses the folds those heads ran), and heads that
    start fresh (one from --init-from may have been trained on the images a fold holds out)."""
    return n["val"] < SMALL_VAL and choices > 1 and not cfg.recipe.init_from


def _folds(b: _Budget, index: DatasetIndex, chosen: Rung, train_cap: int | None) -> int:
    """The plan's k of cross-validated head choices (0: none), with the reason it gives either way on a small split."""
    cfg, n = b.cfg, b.n
    if not chosen.backbones or n["val"] >= SMALL_VAL:
        return 0
    alone = (
        f": the {n['val']} validation images alone move accuracy in steps of {1 / n['val']:.2%}"
        if index.task != "multi"
        else f", not on the {n['val']} validation images alone"
    )
    if not b.folds:
        if len(chosen.backbones) > 1 or cfg.recipe.init_from:
            why = (
                "--init-from's head may have been trained on images a fold would hold out"
                if cfg.recipe.init_from
                else ("--lr" + (" and --loss leave" if index.task == "multi" else " leaves") + " one head per backbone")
            )
            b.why.append(
                f"the backbones are ranked on the {n['val']} validation images alone, not cross-validated: {why}"
            )
        return 0
    losses = len(head_losses(cfg, index)) > 1
    choices = ("rate, loss" if len(head_lrs(cfg)) > 1 else "loss") if losses else "rate"
    ranking = " and which backbone fine-tunes first" if len(chosen.backbones) > 1 and chosen.rounds else ""
    images = (min(train_cap, n["train"]) if train_cap else n["train"]) + n["val"]
    b.why.append(
        f"head choices ({choices}){ranking} are decided by {b.folds}-fold cross-validation on the cached features of "
        f"the {images:,} train+val images, each scored by a head that never saw it{alone}"
    )
    return b.folds


def _planned_stages(cfg: RunConfig, chosen: Rung, scratch: ScratchPlan | None) -> list[RunConfig]:
    """The config of every stage the plan will run (each head rate, each round): which options the plan applies is
    known only once the data and budget are read, so an option no stage applies is said, not refused."""
    stages = [scratch_config(cfg, scratch, seed) for seed in scratch.seeds] if scratch is not None else []
    for name in chosen.backbones:
        stages += [member_config(cfg, "features", name, chosen.size, lr=lr) for lr in head_lrs(cfg)]
    for rnd in chosen.rounds:
        base = member_config(cfg, "features", chosen.backbones[0], chosen.size, lr=head_lrs(cfg)[0])
        stages.append(round_config(cfg, base, chosen.views, rnd))
    return stages


def plan_table(plan: Plan) -> str:
    """The plan as the log shows it before the expensive work starts."""
    lines = [f"auto plan (--time-budget {plan.time_budget:g} s; estimates from timed warm-up batches):"]
    for s in plan.steps:
        lines.append(f"  {s.seconds:7.0f} s  {s.step}" + (" (only if time is left; not in the sum)" if s.spare else ""))
    share = plan.estimate_seconds / plan.time_budget
    lines.append(f"  {plan.estimate_seconds:7.0f} s  in all ({share:.0%} of the budget; a plan may fill {SAFETY:.0%})")
    lines.append(
        "  decided on validation (accuracy or macro mAP; on a tie, a lower loss a paired test resolves): the best "
        "candidate; each further round (the runner-up's too) only if the last one improved; the average of the leading "
        "candidates validation cannot tell apart (unless it scores below the best), then any that beats it and each "
        "of its members alone; flipped views only if they beat what is kept"
    )
    lines.extend(f"  why: {w}" for w in plan.why)
    return "\n".join(lines)


def member_config(cfg: RunConfig, recipe: str, backbone: str, size: int, **recipe_values) -> RunConfig:
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


def head_lrs(cfg: RunConfig) -> tuple[float, ...]:
    """The head learning rates tried on cached features: --lr when set, else HEAD_LRS."""
    return (cfg.recipe.lr,) if "lr" in cfg.recipe.model_fields_set else HEAD_LRS


def scratch_config(cfg: RunConfig, s: ScratchPlan, seed: int) -> RunConfig:
    """The config a planned from-scratch CNN trains with: the native size, its planned epochs, its seed."""
    member = member_config(cfg, "scratch", SCRATCH, s.size, epochs=s.epochs)
    member.seed = seed
    return member


def head_losses(cfg: RunConfig, index: DatasetIndex) -> tuple[str | None, ...]:
    """The losses tried for heads on cached features: --loss when set; a multi-label folder's both (bce, asl),
    measured on validation; none for a single-label folder (cross-entropy)."""
    if index.task != "multi":
        return (None,)
    return (cfg.recipe.loss,) if cfg.recipe.loss else ("bce", "asl")


def round_config(cfg: RunConfig, base: RunConfig, views: int, rnd: Round) -> RunConfig:
    """The config a fine-tuning round trains with: the base candidate's head (backbone, size, rate, epochs) and the
    round's blocks, rate and epochs."""
    r = base.recipe
    return member_config(
        cfg,
        "finetune",
        base.model.backbone,
        base.data.image_size,
        cached_views=views,
        lr=r.lr,
        epochs=r.epochs,
        finetune_lr=rnd.lr,
        finetune_epochs=rnd.epochs,
        unfreeze_blocks=rnd.blocks,
        **({"loss": r.loss} if r.loss else {}),  # the loss the kept head trained with (auto measured both)
    )
