"""`auto`: read the data, plan within the time budget up front, run the plan, and choose everything on validation.

1. Read the data (data/profile.py): images, classes, balance, native sizes, colour. Small or grayscale images also
   get the ImageNet-distance probe (auto/probe.py): pretrained features against a from-scratch CNN on a sample.
2. Plan (`make_plan`): the candidates (a from-scratch CNN at the native size; efficientnet_lite2/0/1 features at one
   shared size, so their probabilities can be averaged), the fine-tuning rounds and test-time augmentation, each
   costed from throughput measured on warm-up batches (auto/costs.py). The richest plan whose estimate fits the
   budget is chosen, printed, and recorded in checkpoints/auto_plan.json; a rerun and every `--resume` follow it.
3. Run it: every candidate, then fine-tuning rounds while validation improves (more epochs at half the learning
   rate, then one more block at a quarter; a round still improving at its last epoch continued, each round fitted
   to the clock with its estimate scaled by what the steps so far took over theirs), then an average of candidates
   (of the leaders validation cannot tell apart, or one that beats what it would replace) and flipped views (if they
   beat what is kept), all on validation. Test probabilities are
   computed alongside but never looked at here: the caller reports them once, for the final model only (they are
   what the saved model computes).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from smallvision import atomic, runclock
from smallvision.auto import crossval, select
from smallvision.auto.clock import TIMING, Ledger, now, round_check
from smallvision.auto.plan import (
    PLAN_FILE,
    PLAN_VERSION,
    SCRATCH,
    SCRATCH_CAP,
    TAIL,
    Plan,
    Round,
    head_losses,
    head_lrs,
    make_plan,
    member_config,
    plan_table,
    round_config,
    rounds_on,
    scratch_config,
    timing_estimate,
)
from smallvision.auto.select import Candidate, choose, final_outcome
from smallvision.config import APPLIES, PLANNING, RunConfig, nested, option_flag, stage_values, unapplied, user_set
from smallvision.data.index import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.recipes import steps
from smallvision.recipes.base import RecipeOutcome, RunContext
from smallvision.recipes.scratch import run_scratch
from smallvision.results import RunNotes

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
# A validation score (accuracy or macro mAP of 1) after which no round runs: a round could only lower the loss of
# a model already perfect on validation, which the split cannot tell from a lucky one
PERFECT = 1.0 - select.TIE
MAX_CONTINUED = 3  # rounds a candidate may add after rounds still improving at their last epoch (each clock-checked)


# ---------------------------------------------------------------------------------------------------- the plan


# ---------------------------------------------------------------------------------------------------- running it


def _sampled(index: DatasetIndex, cap: int | None, seed: int) -> DatasetIndex:
    """The index with at most `cap` training images, taken stratified by class (val and test untouched)."""
    if cap is None:
        return index
    from sklearn.model_selection import train_test_split

    train = [it for it in index.items if it.split == "train"]
    if cap >= len(train):
        return index
    try:  # multi-label: a plain seeded sample (scikit-learn stratifies one label per image)
        by = [it.label for it in train] if index.task == "single" else None
        keep, _ = train_test_split(train, train_size=cap, stratify=by, random_state=seed)
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
    ledger: Ledger = field(default_factory=Ledger)  # each step's estimate against the seconds it took
    ended: list[str] = field(default_factory=list)  # why planned rounds did not run (no gain, or nothing to gain)


@dataclass
class _Head:
    """One head tried on a backbone's cached features (a rate, a loss) and where it stands."""

    stage: str
    cfg: RunConfig
    fs: object
    probs: dict
    labels: dict
    notes: list[str]
    standing: select.Standing
    folded: select.Folded | None

    @property
    def judged(self) -> select.Standing:
        """What the choice between heads compares: the cross-validated standing when there is one, else validation's."""
        return self.folded.standing if self.folded is not None else self.standing


def _features_candidate(
    cfg, name, size, index, progress, notes, logger, tally: Tally, tap=None, folds=0
) -> tuple[Candidate, int]:
    """A dense head on `name`'s cached features; unless --lr is set, at the better of HEAD_LRS (and, on a multi-label
    folder without --loss, of both losses), on `folds`-fold cross-validation of train+val when the plan has it, else
    on validation. Each head is its own stage (history.csv, the tracker): `features NAME`, `features NAME lr RATE`
    when several rates, `... LOSS` when several losses. With it, how many images the backbone computed (not cached)."""
    lrs, losses = head_lrs(cfg), head_losses(cfg, index)
    tried = []
    for lr, loss in itertools.product(lrs, losses):
        cand_cfg = member_config(cfg, "features", name, size, lr=lr, **({"loss": loss} if loss else {}))
        stage = f"features {name}" + (f" lr {lr:g}" if len(lrs) > 1 else "") + (f" {loss}" if len(losses) > 1 else "")
        stage_notes: list[str] = []
        fs = steps.feature_stage(cand_cfg, index, progress, stage_notes, logger, stage, tap)
        tally.ran.append(cand_cfg)
        probs, labels = steps.feature_probs(fs), {s: y for s, (_, y) in fs.by_split.items()}
        val = select.standing(probs["val"], labels["val"], fs.task)
        oof = crossval.folded(fs, len(index.classes), cand_cfg, folds) if folds else None
        tried.append(_Head(stage, cand_cfg, fs, probs, labels, stage_notes, val, oof))
    if any(t.folded is None for t in tried):  # a class too small to fold: every head's, as they share the images
        tried = [dataclasses.replace(t, folded=None) for t in tried]
    won = tried[0]
    for t in tried[1:]:  # a later rate or loss only when it beats the one kept so far
        won = t if t.judged.beats(won.judged) else won
    notes.extend(won.notes)
    if len(lrs) > 1:
        tally.choices["head_lr"] += 1
    if len(losses) > 1:
        tally.choices["loss"] += 1
    if len(tried) > 1:
        notes.decide("head-lr", _head_words(name, tried, won, folds))
    fs = won.fs
    model = steps.pretrained_model(won.cfg, fs.specs, len(index.classes), head=copy.deepcopy(fs.head), task=fs.task)
    model.requires_grad_(False)
    computed = sum(t.fs.cached.computed for t in tried)
    return Candidate(
        f"{name} features",
        won.cfg,
        model,
        fs.specs,
        won.probs,
        won.labels,
        fs.history,
        fs.best_epoch,
        ["head"],
        size,
        stages=[(won.stage, won.cfg)],
        folded=won.folded,
    ), computed


def _head_words(name: str, tried: list[_Head], won: _Head, folds: int) -> str:
    """The notes' line on the head kept among `tried`: on what it was decided, and every head's figures."""

    def shown(words) -> str:
        return ", ".join(f"{t.stage.removeprefix(f'features {name} ')}: {words(t)}" for t in tried)

    kept = won.stage.removeprefix(f"features {name} ")
    val = shown(lambda t: t.standing.words(*(u.standing for u in tried if u is not t)))
    if won.folded is None:
        why = "; too few images of a class (multi-label: in all) to fold, so not cross-validated as planned"
        return f"{name} head on cached features: kept {kept} on validation ({val}{why if folds else ''})"
    cv = shown(lambda t: t.folded.words(*(u.folded.standing for u in tried if u is not t)))
    return (
        f"{name} head on cached features: kept {kept} by {len(won.folded.scores)}-fold cross-validation on the "
        f"{len(won.folded.labels):,} train+val images ({cv}; on validation alone: {val})"
    )


def _scratch_candidates(cfg, plan, index, run_dir, start, progress, notes, logger, tally: Tally) -> list[Candidate]:
    """The planned from-scratch CNNs at the native size, one per planned seed."""
    from smallvision.models.backbone import scratch_backbone
    from smallvision.models.head import Head, ImageClassifier

    s = plan.scratch
    out = []
    for i, seed in enumerate(s.seeds):
        cand_cfg = scratch_config(cfg, s, seed)
        stage = "scratch" if i == 0 else f"scratch{i + 1}"
        left = cfg.recipe.time_budget - TAIL - (now() - start)  # the clock stops a network the estimate misjudged
        run = run_scratch(RunContext(cand_cfg, index, run_dir, progress, logger), stage=stage, max_seconds=left)
        tally.ran.append(cand_cfg)
        notes.extend(run.notes)
        backbone = scratch_backbone(SCRATCH, s.size, cand_cfg.model.batch_norm)
        head = Head(backbone.net.num_features, len(index.classes), cand_cfg.model.dropout, cand_cfg.model.hidden)
        model = ImageClassifier([backbone], head, task=steps.task_of(index))
        model.load_state_dict(run.state)
        model.requires_grad_(False)
        name = f"{SCRATCH} from scratch" + (f" (seed {seed})" if len(s.seeds) > 1 else "")
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
                s.size,
                stages=[(stage, cand_cfg)],
            )
        )
    return out


# by rank on validation: whose rounds the notes say, the prefix of their names, the suffix of their stages and checks
WHOSE = (("the best candidate", "", ""), ("the runner-up", "runner-up ", "b"), ("the third candidate", "third ", "c"))


@dataclass(frozen=True)
class Rounds:
    """Whose fine-tuning rounds these are, by rank on validation: the best pretrained candidate's (0: the plan's
    rounds), the runner-up's (1: the plan's runner-up rounds) or the third's (2: the runner-up's shapes, run only on
    time left after them); their stage, clock-check and ledger names follow."""

    rank: int = 0

    def of(self, plan: Plan) -> list[Round]:
        """The plan's rounds for this candidate."""
        return list(plan.runner_up if self.rank else plan.rounds)

    def stage(self, i: int) -> str:
        """history.csv's stage and the checkpoints' folder of round `i`."""
        return f"finetune{i}{WHOSE[self.rank][2]}"

    def check(self, i: int) -> str:
        """The name of round `i`'s recorded clock check."""
        return f"round{i}{WHOSE[self.rank][2]}"

    def words(self, i: int, rounds: list[Round]) -> str:
        """Round `i` of `rounds` as the notes and the ledger say it: the plan's number (its step key), a continuation
        named after the round it continues ("round 1 (continued 2)")."""
        planned = sum(not r.continues for r in rounds[:i])
        again = next((k for k in range(i) if not rounds[i - 1 - k].continues), i)
        name = f"{WHOSE[self.rank][1]}round {planned}"
        return name + ("" if not again else " (continued)" if again == 1 else f" (continued {again})")

    def reserve(self, plan: Plan) -> float:
        """Seconds the clock keeps for the planned steps after these rounds: the runner-up's and the third's rounds
        may run on time the plan gave the flipped views, so those are kept for every member fine-tuned so far (the
        plan costs one), averaged when validation says so."""
        return (self.rank + 1) * plan.tta_seconds if self.rank and plan.tta else 0.0


def _fitted_round(
    run_dir: Path, i: int, rounds: list[Round], start: float, budget: float, notes, ledger, who: Rounds, reserve=0.0
) -> Round | None:
    """Round `i` of `rounds` as it still fits the budget by the clock, its estimate re-made from the rates just
    measured (scaled by what the rounds so far, else all steps, took over theirs): fewer epochs when that no longer
    fits, None when not one epoch fits, which ends them."""
    rnd, words = rounds[i - 1], who.words(i, rounds)
    guard = round_check(run_dir, who.check(i), start, dataclasses.asdict(rnd), budget, ledger, reserve)
    basis = guard.get("basis", "the steps so far")  # a record older than the rounds' own ratio: every step's
    fits = guard.get("epochs", rnd.epochs if guard.get("run") else 0)  # a resumed run's older record: run or not
    if fits < 1:
        notes.decide(
            "stop",
            f"stopped fine-tuning before {words}: {guard['elapsed']:.0f} s had passed and it was estimated "
            f"at {guard['estimate']:.0f} s (its plan's estimate x{guard.get('ratio', 1.0)}, what {basis} took over "
            f"theirs), past --time-budget {budget:g}",
        )
        return None
    if fits < rnd.epochs:
        notes.decide(
            "shrink",
            f"fine-tuning {words} shortened to {fits} of its {rnd.epochs} epochs to fit --time-budget "
            f"{budget:g}: {guard['elapsed']:.0f} s had passed and {basis} took x{guard['ratio']} their estimates",
        )
    remade = guard.get("ratio", 1.0)
    return dataclasses.replace(rnd, epochs=fits, seconds=rnd.seconds_for(fits) * remade, remade=remade)


def _continued(
    i: int, rnd: Round, fitted: Round, best_epoch: int, rounds: list[Round], notes: RunNotes, who: Rounds
) -> None:
    """A round whose best epoch was its last (validation still rising) is followed by as many epochs again at its
    rate and blocks, up to MAX_CONTINUED times for each candidate, each still checked against the clock."""
    added = sum(r.continues for r in rounds)
    if best_epoch < fitted.epochs or added >= MAX_CONTINUED:
        return
    words = who.words(i, rounds)
    rounds.insert(i, dataclasses.replace(rnd, continues=True, seconds=rnd.seconds - rnd.setup, setup=0.0))
    notes.decide(
        "continue",
        f"{words}'s best epoch was its last ({best_epoch} of {fitted.epochs}): validation was still rising, "
        f"so {who.words(i + 1, rounds)} continues it ({rnd.epochs} epochs more at lr {rnd.lr:.2g})",
    )


def _recosted(
    cfg: RunConfig, plan: Plan, base: Candidate, run_dir: Path, who: Rounds, notes, ledger, tap=None
) -> list[Round]:
    """The candidate's rounds costed on its own backbone: the plan costs them on its slowest, not yet knowing which
    candidate validation will pick, so the clock checks and the ledger would hold a cheaper backbone to its figures;
    and round 1 on every image when the feature pass kept none of its activations (`tap`: the features were cached).
    Recorded per backbone, so a resume costs them the same without reading the machine's figures again; figures this
    machine had not timed yet are timed now, and that time is a ledger row of its own (estimated by
    `timing_estimate`), which the clock's ratios leave out: timing is not the work they foretell."""
    from smallvision.auto.costs import Costs, planned
    from smallvision.caching.activations import view_precision
    from smallvision.engine.distributed import rank_zero_decision
    from smallvision.engine.precision import resolve_precision

    rounds, backbone = who.of(plan), base.cfg.model.backbone
    train_arithmetic = view_precision(resolve_precision(cfg.trainer.precision))
    tapped = plan.tapped and tap is not None and tap.holds(backbone, train_arithmetic)
    why = tap.declined.get(backbone, "its features were already cached") if tap is not None else ""

    def decide() -> dict:
        costs, began = Costs(resolve_precision(cfg.trainer.precision)), now()
        make = partial(rounds_on, cfg, plan, backbone=backbone, rounds=rounds, tapped=tapped)
        estimate = timing_estimate(cfg, plan, costs, backbone, make)
        own = planned(make, costs)
        timed = {"measured": costs.measured, "seconds": round(now() - began, 1), "estimate": round(estimate, 1)}
        return {"rounds": [dataclasses.asdict(r) for r in own], "timed": timed}

    # keyed by whether round 1 is tapped: a resumed process finds the features cached and its tap empty
    path = run_dir / "checkpoints" / f"auto_costs_{who.check(1)}_{backbone}{'_tapped' if tapped else ''}.json"
    record, recorded = rank_zero_decision(path, decide)
    if record["timed"]["measured"] and not recorded:
        ledger.record(
            f"{TIMING}{backbone}'s fine-tuning steps", record["timed"]["estimate"], record["timed"]["seconds"]
        )
    out = [Round(**r) for r in record["rounds"]]
    planned_s, own_s = sum(r.seconds for r in rounds), sum(r.seconds for r in out)
    if round(own_s, 1) != round(planned_s, 1):  # as the ledger shows them
        notes.decide(
            "recost",
            f"{WHOSE[who.rank][0]}'s {len(out)} fine-tuning round(s) "
            f"re-costed on {backbone}, which runs them: {own_s:.1f} s (the plan's {planned_s:.1f} s were costed on "
            "its slowest backbone"
            + (
                f", round 1 on activations the feature pass was to keep; it kept none: {why})"
                if plan.tapped and not tapped
                else ")"
            ),
        )
    return out


def _round_stage(round_cfg, stage: str, model, data, views, trainable, run_dir: Path, left: float, progress, logger):
    """One fine-tuning round's training (resumed from its checkpoints), stopped by the clock `left` seconds from now
    less the tail kept for saving, whatever its estimate said."""
    from smallvision.engine.stage import stage_spec
    from smallvision.engine.trainer import fit

    rr = round_cfg.recipe
    groups = steps.param_groups(model, {0: trainable}, rr.lr, rr.finetune_lr, rr.layer_decay)
    spec = stage_spec(round_cfg, stage, "network", epochs=rr.finetune_epochs, max_seconds=left - TAIL)
    image_data = steps.image_data(round_cfg, data, views)
    return fit(
        model,
        image_data,
        spec,
        model.task,
        groups=groups,
        stage_dir=run_dir / "checkpoints" / stage,
        progress=progress,
        on_epoch=steps.epoch_logger(logger),
    )


def _trained(res, since: float) -> int:
    """The images a round trained on in this process: its epochs that ended after `since` (Unix time, as history
    rows are stamped; the budget's clock is another), not those a resumed round had run before."""
    return sum(row["images"] for row in res.history if row["time"] >= since)


def _finetune(
    cfg, plan, base: Candidate, index, run_dir, start, progress, notes, logger, tally, who: Rounds = Rounds(), tap=None
) -> Candidate | None:
    """Fine-tuning rounds on a pretrained candidate, each only while the last one improved validation, a round that
    was still improving at its last epoch continued (see `_continued`); round 1 takes what `tap` kept."""
    from smallvision.models.backbone import freeze

    budget = cfg.recipe.time_budget
    if base.val >= PERFECT:  # see PERFECT
        tally.ended.append(
            f"{base.name} score {base.val:.4f} on validation, a perfect score (no rounds run: they could only lower "
            "its loss)"
        )
        return None
    rounds = _recosted(cfg, plan, base, run_dir, who, notes, tally.ledger, tap)
    reserve = who.reserve(plan)
    fitted = _fitted_round(run_dir, 1, rounds, start, budget, notes, tally.ledger, who, reserve)  # before loading
    if fitted is None:
        return None
    tune_cfg = round_config(cfg, base.cfg, plan.views, fitted)
    data = steps.load_images(tune_cfg, index, progress)
    model = copy.deepcopy(base.model).requires_grad_(True)
    kept, best_state, best = base.standing, copy.deepcopy(model.state_dict()), None
    history, blocks, views, stages = list(base.history), None, None, list(base.stages)
    i = 0
    while i < len(rounds):
        rnd, i, began, since = rounds[i], i + 1, now(), time.time()
        if i > 1:
            fitted = _fitted_round(run_dir, i, rounds, start, budget, notes, tally.ledger, who, reserve)
        if fitted is None:
            break
        round_cfg = round_config(cfg, base.cfg, plan.views, fitted)
        if rnd.blocks != blocks:
            blocks, taps = rnd.blocks, tap if i == 1 else None  # the feature pass kept round 1's boundary only
            trainable = freeze(model.backbones[0], blocks)
            views = steps.activation_views(tune_cfg, model, data, notes, progress, taps, index)
        stage = who.stage(i)
        res = _round_stage(
            round_cfg, stage, model, data, views, trainable, run_dir, budget - (now() - start), progress, logger
        )
        val = _val_probs(model, data, views)  # the best epoch's, which the round is judged on (part of its time)
        tally.ran.append(round_cfg)
        tally.ledger.record(who.words(i, rounds), fitted.seconds, now() - began, fitted.remade, _trained(res, since))
        history += [{**row, "stage": stage} for row in res.history]
        stages.append((stage, round_cfg))
        place = select.standing(val, data["val"][1], base.task)
        if not _improved(base, who.words(i, rounds), fitted, trainable, (place, res.best_epoch), kept, notes, tally):
            model.load_state_dict(best_state)
            if rnd.continues:  # only the added epochs failed: the plan's next round (a block more) still runs
                continue
            words = f"{base.cfg.model.backbone} {who.words(i, rounds)} did not improve validation"
            _not_run(tally, words, i, rounds, who, "they would have started from the same weights at a lower rate")
            break
        kept, best_state = place, copy.deepcopy(model.state_dict())
        best = _tuned(base, tune_cfg, model, (data, views, val), history, res.best_epoch, trainable, stages)
        if place.score >= PERFECT:  # see PERFECT
            _not_run(tally, f"{best.name} reached {place.score:.4f} on validation", i, rounds, who)
            break
        _continued(i, rnd, fitted, res.best_epoch, rounds, notes, who)
    return best


def _improved(base: Candidate, words: str, fitted: Round, trainable, reached: tuple, kept, notes, tally) -> bool:
    """Whether the round's place on validation (`reached`: its standing and best epoch) beats the one `kept` so far:
    counted as a choice and noted either way."""
    (place, epoch), improved = reached, reached[0].beats(kept)
    mine, theirs = place.words(kept), kept.words(place)
    tally.choices["finetune_round"] += 1
    notes.decide(
        "round",
        f"fine-tuning {base.cfg.model.backbone} {words} (blocks {', '.join(trainable)} at lr {fitted.lr:.2g}, "
        f"{fitted.epochs} epochs): best {select.metric_words(base)} {mine} at epoch {epoch}, "
        + (f"better than {theirs}" if improved else f"not better than {theirs}: stopped here"),
    )
    return improved


def _later(i: int, rounds: list[Round], who: Rounds) -> str:
    """The rounds after round `i` of `rounds`, as the budget note names those not run."""
    return ", ".join(who.words(k, rounds) for k in range(i + 1, len(rounds) + 1))


def _not_run(tally: Tally, why: str, i: int, rounds: list[Round], who: Rounds, because: str = "") -> None:
    """Why the rounds after round `i` do not run, for the budget note (nothing when none is left)."""
    if i < len(rounds):
        tally.ended.append(f"{why} ({_later(i, rounds, who)} not run{': ' + because if because else ''})")


def _val_probs(model, data: dict, views) -> np.ndarray:
    """The network's validation probabilities, from the cached activations when there are some (what the round's
    comparison reads)."""
    return _split_probs(model, data, views, ("val",))["val"]


def _split_probs(model, data: dict, views, splits: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The network's probabilities of `splits`: on their cached activations, else on their images."""
    if views is not None:
        return views.probabilities(model.task, splits=splits)
    from smallvision.prediction import probabilities

    return {s: probabilities(model, data[s][0]) for s in splits}


def _tuned(base: Candidate, tune_cfg, model, inputs, history, best_epoch: int, trainable, stages) -> Candidate:
    """The fine-tuned network after an improving round, as a candidate: a frozen copy and its probabilities
    (`inputs`: the images, their cached activations or None, and the validation probabilities already read)."""
    data, views, val = inputs
    others = _split_probs(model, data, views, tuple(s for s in data if s != "val"))
    probs = {s: val if s == "val" else others[s] for s in data}
    return Candidate(
        f"{base.cfg.model.backbone} fine-tuned",
        tune_cfg,
        copy.deepcopy(model).requires_grad_(False),
        base.specs,
        probs,
        {s: y for s, (_, y) in data.items()},
        list(history),
        best_epoch,
        ["head"] + [f"backbones.0.{t}" for t in trainable],
        base.size,
        stages=list(stages),
    )


def _recorded_plan(cfg: RunConfig, index: DatasetIndex, run_dir: Path) -> tuple[Plan, RunNotes]:
    """The run's plan: the one recorded in its folder (a rerun or a resume follows it), else one made now from the
    data's profile, the probe and the measured costs, and recorded; with the notes that say so."""
    from smallvision.auto.costs import Costs, planned
    from smallvision.auto.probe import imagenet_distance
    from smallvision.data.profile import profile_data
    from smallvision.engine.distributed import rank_zero_decision
    from smallvision.engine.precision import resolve_precision

    given_backbone = "backbone" in cfg.model.model_fields_set

    def decide() -> dict:
        profile = profile_data(index, cfg.seed)
        probe = None
        # the probe scores single-label accuracy; a multi-label plan takes the pretrained backbones it would favour
        if (profile.tiny or profile.grayscale >= 0.5) and not given_backbone and index.task == "single":
            size = profile.native_size(SCRATCH_CAP) or SCRATCH_CAP
            probe = imagenet_distance(
                index, scratch_size=size, seed=cfg.seed, precision=cfg.trainer.precision, progress=False
            )
        costs, spent = Costs(resolve_precision(cfg.trainer.precision)), runclock.spent_before(run_dir)
        return planned(lambda c: make_plan(cfg, index, profile, probe, c, spent=spent), costs).to_dict()

    path = run_dir / "checkpoints" / PLAN_FILE
    raw, recorded = rank_zero_decision(path, decide)
    try:
        plan = Plan.from_dict(raw) if raw.get("version") == PLAN_VERSION else None
    except (TypeError, KeyError):  # keys this version's Plan does not have: a file edited by hand
        plan = None
    if plan is None:
        raise SmallvisionError(
            f"{path} was written by another version of auto, which this one cannot continue; start a new run: "
            f"smallvision train --config {run_dir / 'config.yaml'} --out NEW_FOLDER"
        )
    log.info("%s", plan_table(plan))
    notes = RunNotes("auto")
    notes.decide(
        "plan-file",
        f"{'reused the plan recorded in' if recorded else 'plan recorded in'} {path}: "
        + "; ".join(f"{s.step} ~{s.seconds:.0f} s" + (" if time is left" if s.spare else "") for s in plan.steps)
        + f" (estimated {plan.estimate_seconds:.0f} s of --time-budget {cfg.recipe.time_budget:g})",
    )
    for why in plan.why:
        notes.decide("plan", why)
    return plan, notes


def run_auto(ctx: RunContext) -> RecipeOutcome:
    """`auto`: read the data, plan within --time-budget, run the plan, choose on validation (see the module doc)."""
    cfg, index, run_dir, progress, logger = ctx.cfg, ctx.index, ctx.run_dir, ctx.progress, ctx.logger
    start = ctx.start if ctx.start is not None else now()
    budget = cfg.recipe.time_budget
    plan, notes = _recorded_plan(cfg, index, run_dir)
    work = _sampled(index, plan.train_cap, cfg.seed)
    cands: list[Candidate] = []
    tally = Tally()  # the config of every stage that ran, kept or not, and each choice made on validation
    if plan.scratch is not None:
        began = now()
        cands += _scratch_candidates(cfg, plan, work, run_dir, start, progress, notes, logger, tally)
        tally.ledger.record("scratch", plan.seconds_of("scratch"), now() - began)
    tap = _tap(cfg, plan)
    for k, name in enumerate(plan.backbones):
        began = now()  # the first backbone's pass decodes the images too
        cand, computed = _features_candidate(
            cfg, name, plan.size, work, progress, notes, logger, tally, tap, plan.folds
        )
        cands.append(cand)
        keys = (f"features {name}", "decode") if k == 0 else (f"features {name}",)
        tally.ledger.record(" + ".join(reversed(keys)), plan.seconds_of(*keys), now() - began, images=computed)
    pretrained = [c for c in cands if c.specs]
    cands += _fine_tuned(cfg, plan, pretrained, work, run_dir, start, progress, notes, logger, tally, tap)
    members, tta = choose(cands, plan, work, notes, run_dir, start, budget, tally)
    _record_costs(run_dir, plan, tally.ledger, notes)
    unused = unapplied(user_set(cfg), tally.ran)
    if unused:
        notes.decide(
            "unapplied", f"{', '.join(map(option_flag, unused))} set but not applied: no stage that ran uses them"
        )
    if work is not index:  # held-out images that failed to decode were dropped from the sample's index only
        kept = {it.digest for it in work.items}
        index.drop({it.digest: "unreadable" for it in index.items if it.split != "train" and it.digest not in kept})
    outcome = final_outcome(members, tta, work, notes)
    _budget_used(start, budget, tally, notes)  # saving, evaluation and the report follow: TAIL keeps their time
    return dataclasses.replace(
        outcome,
        resolved=resolved_values(cfg, members, cands),
        selection=dict(tally.choices),
        decisions=notes.decisions,
    )


def _tap(cfg: RunConfig, plan: Plan):
    """The boundary tap the plan costed round 1 with (caching/taps.py), or None."""
    from smallvision.caching.taps import BoundaryTap, memory_bytes

    if not plan.tapped or not plan.rounds:
        return None
    return BoundaryTap(frozenset(plan.backbones), plan.rounds[0].blocks, plan.size, memory_bytes(cfg))


def _fine_tuned(cfg, plan, pretrained, index, run_dir, start, progress, notes, logger, tally, tap=None) -> list:
    """The best pretrained candidate fine-tuned in the plan's rounds, then the runner-up in its own when the plan has
    them, then the third in the same shapes on the time left: each an improved network or nothing (round 1 on what
    `tap` kept of its activations)."""
    ranked, why = select.rank(pretrained) if pretrained else ([], None)  # as the final choice: noise is no lead
    if why and plan.rounds and (ranked[0] is not max(pretrained, key=lambda c: c.val) or ranked[0].folded):
        notes.decide("uncertainty", f"fine-tuned first: {why}")
    out = []
    for base, who in zip(ranked, map(Rounds, range(len(WHOSE))), strict=False):
        if who.of(plan):
            tuned = _finetune(cfg, plan, base, index, run_dir, start, progress, notes, logger, tally, who, tap)
            out += [tuned] if tuned is not None else []
        if tap is not None:  # what its round 1 did not take (it stopped before, or ran none); every pass's is here
            tap.release(base.cfg.model.backbone)
    return out


def _budget_used(start: float, budget: float, tally: Tally, notes: RunNotes) -> None:
    """How much of --time-budget the run used and, below 85% of it, why: rounds that stopped improving or had
    nothing to gain, else the steps' ratio to their estimates."""
    used = now() - start
    line = f"used {used:.0f} s of --time-budget {budget:g} s ({used / budget:.0%})"
    if tally.ended and used < 0.85 * budget:
        line += ": ended early because " + "; ".join(tally.ended)
    elif used < 0.85 * budget:
        line += f": the steps took x{tally.ledger.total_ratio():.2f} their estimates in all, so the plan ran short"
    notes.decide("budget", line)


def _record_costs(run_dir: Path, plan: Plan, ledger: Ledger, notes: RunNotes) -> None:
    """Each step's estimate against the seconds it took, in auto_plan.json's `actual` and the run's notes, so the
    cost model is checked on every run (benchmarks/auto.py prints it)."""
    from smallvision.engine.distributed import is_rank_zero

    if not ledger.rows:
        return
    if is_rank_zero():
        atomic.write_json(run_dir / "checkpoints" / PLAN_FILE, {**plan.to_dict(), "actual": ledger.rows})
    shown = "; ".join(
        f"{r['step']} {r['estimate']:.0f} s estimated"
        + (f" (the plan's {r['estimate'] / r['remade']:.0f} s x{r['remade']:.2f})" if r["remade"] != 1 else "")
        + f", {r['actual']:.0f} s taken"
        + (f" (x{r['ratio']:.2f})" if r["ratio"] is not None else "")
        + (f", {r['images_per_second']:g} images/s" if r["images_per_second"] else "")
        for r in ledger.rows
    )
    notes.decide("costs", f"the plan against the clock: {shown}")


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
            f"val_{c.task.metric}": round(c.val, 4),
            "stages": [
                {"stage": stage, **nested({p: v for p, v in stage_values(s).items() if common.get(p, ()) != v})}
                for stage, s in c.stages
            ],
        }
        for c in ordered
    ]
    return {**nested(common), "candidates": candidates}
