"""auto's choices on validation: the candidates it trained, which of them (or which average) is kept, and flipped
views."""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np

from smallvision.auto.clock import budget_check, now
from smallvision.auto.plan import Plan, flip_seconds
from smallvision.config import RunConfig
from smallvision.data.index import DatasetIndex
from smallvision.errors import SmallvisionError
from smallvision.recipes import steps
from smallvision.recipes.base import RecipeOutcome
from smallvision.results import RunNotes
from smallvision.task import METRIC_NAMES, MULTI_LABEL, SINGLE_LABEL

log = logging.getLogger(__name__)
ALPHA = 0.05  # a difference on validation with a paired-test p-value below this is signal; above it, noise
TIE = 1e-9  # scores closer than this are equal: equal counts of images are exactly equal, macro mAP's float noise not


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
    folded: Folded | None = None  # a head's k-fold cross-validation on train+val (auto/crossval.py), when it ran

    @property
    def task(self):
        """The candidate's task, as its targets say: class indices (single-label) or rows of 0/1 (multi-label)."""
        return MULTI_LABEL if np.ndim(self.labels["val"]) == 2 else SINGLE_LABEL

    @property
    def val(self) -> float:
        """The validation score (the task's: accuracy, or macro mAP) of this candidate's probabilities."""
        return score(self.probs["val"], self.labels["val"], self.task)

    @property
    def standing(self) -> Standing:
        """This candidate's place on validation (see `Standing`)."""
        return standing(self.probs["val"], self.labels["val"], self.task)


@dataclass(frozen=True, eq=False)
class Standing:
    """A model's place on validation, as every choice of auto compares it: its score (accuracy, or macro mAP) and,
    for the ties the score cannot break (43 images score in steps of 0.023), each image's loss."""

    score: float
    losses: np.ndarray = field(repr=False)

    @property
    def loss(self) -> float:
        """The mean validation loss."""
        return float(self.losses.mean())

    def ties(self, other: Standing) -> bool:
        """Whether the two scores are equal (within TIE)."""
        return abs(self.score - other.score) <= TIE

    def beats(self, other: Standing) -> bool:
        """A higher score; or an equal one at losses a paired test on the same images finds lower (Wilcoxon
        signed-rank on each image's loss, one-sided p < ALPHA / 2: a two-sided test at ALPHA, in the lower loss's
        direction): a loss lower by float noise, or on a few images, is not signal (and a kept average or flipped
        view costs every later prediction twice or more)."""
        if not self.ties(other):
            return self.score > other.score
        return self.loss < other.loss and lower_p(self.losses, other.losses) < ALPHA / 2

    def words(self, *others: Standing, spread: str = "") -> str:
        """The score in words (then `spread`, its uncertainty), with the loss when it ties any of `others` (then the
        loss decided)."""
        tie = any(self.ties(o) for o in others)
        return f"{self.score:.4f}{spread}" + (f" (loss {self.loss:.4f})" if tie else "")


@dataclass(frozen=True, eq=False)
class Folded:
    """A head's out-of-fold probabilities on the train+val images (each row from the head of the fold that never saw
    that image: auto/crossval.py), those images' labels, and each fold's score: a choice's evidence and its spread."""

    probs: np.ndarray
    labels: np.ndarray
    scores: tuple[float, ...]
    task: object

    @cached_property
    def standing(self) -> Standing:
        """Its place over every out-of-fold image, as validation standings compare."""
        return standing(self.probs, self.labels, self.task)

    def words(self, *others: Standing) -> str:
        """The score with its spread over the folds (and the loss when it ties one of `others`), for the notes."""
        return self.standing.words(*others, spread=f" +- {np.std(self.scores):.4f}")


def score(probs: np.ndarray, labels: np.ndarray, task) -> float:
    """The validation score every choice of auto compares first (the task's selection score)."""
    return task.score(probs, labels)


def standing(probs: np.ndarray, labels: np.ndarray, task) -> Standing:
    """The place on validation of these probabilities (see `Standing`)."""
    return Standing(score(probs, labels, task), task.image_losses(probs, labels))


def lower_p(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided p-value that losses `a` are no lower than `b` on the same images (Wilcoxon signed-rank on the images
    whose losses differ, exact for up to 50 of them; 1.0 when none differs or the images are not the same)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return 1.0
    d = (a - b)[a != b]  # equal losses (two saturated softmaxes) say nothing either way
    return float(wilcoxon(d, alternative="less").pvalue) if len(d) else 1.0


def metric_words(cand: Candidate) -> str:
    """What auto's notes call a candidate's score: "val accuracy", or "val macro mAP"."""
    return f"val {METRIC_NAMES[cand.task.metric]}"


def flipped(cand: Candidate, index: DatasetIndex, splits: tuple[str, ...]) -> None:
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
        cand.flipped[split] = cand.task.probabilities_of(logits)


def choose(cands: list[Candidate], plan: Plan, index, notes: RunNotes, run_dir, start, budget, tally) -> tuple:
    """The best single candidate, an average of candidates (of the leaders validation cannot tell apart, or one that
    beats the rest), and flipped views if they beat what is kept;
    every comparison on validation is counted in `tally.choices`, the flipped views' seconds in `tally.ledger`."""
    choices = tally.choices
    ranked, why = rank(cands)
    if why:
        notes.decide("uncertainty", why)
    best = ranked[0]
    listing = ", ".join(f"{c.name} {c.val:.4f}" for c in ranked)
    if cross_validated(cands):
        folded = ", ".join(f"{c.name} {c.folded.words()}" for c in ranked)
        listing = (
            f"on {len(best.folded.labels):,} train+val images, cross-validated ({folded}; on validation: {listing})"
        )
    else:
        listing = f"on validation ({listing})"
    notes.decide("choice", f"chose {best.name} among the candidates {listing}")
    if len(cands) > 1:
        choices["candidate"] += 1
    members, kept = _averaged(ranked, notes, choices)
    tta = False
    if plan.tta:
        guard = budget_check(run_dir, "tta", start, lambda: flip_estimate(plan, members), budget)
        if guard["run"]:  # val is flipped here, test once the flips are kept
            began, n = now(), plan.images
            tta, kept = _flips(members, kept, index, notes, choices)
            share = n["val"] / max(1, n["val"] + n["test"])  # a check recorded before the val figure was kept
            tally.ledger.record("tta (val)", guard.get("val", guard["estimate"] * share), now() - began)
        else:
            notes.decide("tta", f"test-time augmentation not tried: {guard['elapsed']:.0f} s had passed")
    notes.decide(
        "final",
        f"final model: {' averaged with '.join(c.name for c in members)}"
        + (", each image averaged with its mirror image" if tta else "")
        + f", {metric_words(best)} {kept.score:.4f}",
    )
    return members, tta


def flip_estimate(plan: Plan, members: list[Candidate]) -> dict[str, float]:
    """Seconds to flip val and test (`seconds`) and val alone (`val`) through every member, each costed on its own
    backbone (the plan costs one member, on its slowest); a from-scratch member at the plan's figure for one."""
    from smallvision.auto.costs import Costs, planned
    from smallvision.engine.precision import resolve_precision

    n, costs = plan.images, Costs(resolve_precision(members[0].cfg.trainer.precision))
    out = {}
    for key, images in (("seconds", n["val"] + n["test"]), ("val", n["val"])):
        share = images / max(1, n["val"] + n["test"])
        out[key] = sum(
            planned(partial(flip_seconds, c.cfg, backbone=c.cfg.model.backbone, size=c.size, images=images), costs)
            if c.specs
            else plan.tta_seconds * share
            for c in members
        )
    return out


def rank(cands: list[Candidate]) -> tuple[list[Candidate], str | None]:
    """Candidates best first, and what the notes say of the lead (None with no rival on the same images): on their
    heads' cross-validation over train+val when every one has it on the same images (auto/crossval.py), else on
    validation. When those images cannot tell the best from others (a paired test, p >= ALPHA), the lowest loss
    among those leads: one image of 400 is noise, not signal."""
    if cross_validated(cands):
        return _ranked(cands, _judged(cands), ("train+val images", "cross-validated"), lambda c: c.folded.words())
    return _ranked(cands, _judged(cands), ("validation images", "validation"), lambda c: f"{c.val:.4f}")


def cross_validated(cands: list[Candidate]) -> bool:
    """Whether `rank` compares these candidates on their heads' cross-validation: two or more, each with one on the
    same images."""
    folded = [c.folded for c in cands]
    return len(cands) > 1 and all(f is not None and np.array_equal(f.labels, folded[0].labels) for f in folded)


def _ranked(cands: list[Candidate], judged, where: tuple[str, str], words) -> tuple[list[Candidate], str | None]:
    """`rank` on the (probabilities, labels) `judged` gives each candidate, `where` naming those images and their
    scores, `words` giving a candidate's score in the notes."""
    score = {id(c): c.task.score(*judged(c)) for c in cands}
    order = sorted(cands, key=lambda c: -score[id(c)])  # stable: ties keep the plan's order
    top = order[0]
    probs, y = judged(top)
    same = [c for c in order[1:] if np.array_equal(judged(c)[1], y)]
    if not same:
        return order, None
    task = top.task
    p = {id(c): task.paired_p(probs, judged(c)[0], y) for c in same}
    tied = [top] + [c for c in same if p[id(c)] >= ALPHA]
    loss = {id(c): task.log_loss(judged(c)[0], y) for c in tied}
    lead = min(tied, key=lambda c: loss[id(c)])  # ties: the better score
    shown = ", ".join(f"{c.name} {words(c)} (p={p[id(c)]:.2f})" for c in same)
    images, kind = where
    if lead is top:
        return order, f"{top.name} {words(top)} against, on the same {len(y):,} {images}: {shown}"
    metric = ("val " if kind == "validation" else "cross-validated ") + METRIC_NAMES[task.metric]
    return [lead] + [c for c in order if c is not lead], (
        f"the {len(y):,} {images} cannot tell {top.name} ({metric} {words(top)}) from {lead.name} ({words(lead)}, "
        f"paired test p={p[id(lead)]:.2f} >= {ALPHA}), so the lower {kind} loss decided: {lead.name} "
        f"{loss[id(lead)]:.4f} against {loss[id(top)]:.4f}"
    )


def _averaged(ranked: list[Candidate], notes: RunNotes, choices) -> tuple[list[Candidate], Standing]:
    """The best candidate alone, or an average of two or three, and the standing kept: first the leaders the ranking's
    images cannot tell apart (`_tied`), averaged unless that scores below the best alone there; then any average that
    beats what is kept and each of its members alone.

    Averaged only with candidates fed the same images (size) whose splits hold the same images in the same order.
    """
    best = ranked[0]
    same = [
        c
        for c in ranked
        if c.size == best.size and all(np.array_equal(c.labels[s], best.labels[s]) for s in best.probs)
    ]
    alone = {id(c): c.standing for c in same}  # best is among them: its own images
    members, kept, tied, hedge = [best], alone[id(best)], _tied(same), None
    if len(tied) > 1:
        choices["average"] += 1
        if _not_below(tied, same):
            hedge = standing(sum(c.probs["val"] for c in tied) / len(tied), best.labels["val"], best.task)
            members, kept = tied, hedge
    for k in (2, 3):
        for combo in itertools.combinations(same, k):
            if {id(c) for c in combo} == {id(c) for c in tied}:
                continue  # the leaders' average, already judged
            got = standing(sum(c.probs["val"] for c in combo) / k, best.labels["val"], best.task)
            choices["average"] += 1
            if got.beats(kept) and all(got.beats(alone[id(c)]) for c in combo):  # above each alone, as noted
                members, kept = list(combo), got
    _average_notes(notes, same, tied, hedge, members, kept)
    return members, kept


def _not_below(tied: list[Candidate], same: list[Candidate]) -> bool:
    """Whether the average of `tied` scores at least as well as the best of them alone, on the images `rank` judged
    `same` on."""
    judged, best = _judged(same), tied[0]
    probs, y = judged(best)
    return best.task.score(sum(judged(c)[0] for c in tied) / len(tied), y) >= best.task.score(probs, y) - TIE


def _average_notes(notes: RunNotes, same, tied, hedge: Standing | None, members, kept: Standing) -> None:
    """The notes' lines on the averages tried: the leaders' (kept or not), then the one kept instead, or none."""
    best = same[0]
    lead, words = best.standing, metric_words(best)
    replaced = len(members) > 1 and members is not tied
    if len(tied) > 1:
        where = _tie_words(same)
        said = f"{where} cannot tell {' and '.join(c.name for c in tied)} apart (paired test p >= {ALPHA}): "
        if hedge is not None:
            said += f"averaged their probabilities ({words} {hedge.words(lead)}; {best.name} alone {lead.words(hedge)})"
            said += ", replaced below" if replaced else "; no other average beat it"
        else:
            said += f"their average scores below {best.name} alone on {where}"
            said += "" if replaced else f"; no other average beat {best.name} alone"
        notes.decide("average", said)
    if replaced:
        shown = ", ".join(c.standing.words(kept) for c in members)
        notes.decide(
            "average",
            f"averaged the probabilities of {' and '.join(c.name for c in members)}: {words} "
            f"{kept.words(*(c.standing for c in members))}, above each alone ({shown})"
            + (" and above the leaders' average" if hedge is not None else ""),
        )
    elif len(same) > 1 and len(tied) == 1:
        notes.decide("average", f"no average of candidates beat {best.name} alone on validation ({best.val:.4f})")


def _judged(cands: list[Candidate]):
    """What `rank` judged these candidates on: (probabilities, labels) of their heads' cross-validation over
    train+val when every one has it on the same images, else of validation."""
    if cross_validated(cands):
        return lambda c: (c.folded.probs, c.folded.labels)
    return lambda c: (c.probs["val"], c.labels["val"])


def _tie_words(cands: list[Candidate]) -> str:
    """The images `_tied` compared these candidates on, as the notes name them."""
    return "cross-validation on train+val" if cross_validated(cands) else "validation"


def _tied(same: list[Candidate]) -> list[Candidate]:
    """The best of `same` (best first, on the same images) and up to two more that the images `rank` judged them on
    cannot tell from it (a paired test, p >= ALPHA), in their order. Picking one of them is picking on noise, and the
    lower validation loss is no safer pick: fine-tuning chose its epochs and rounds on that loss. Their average
    hedges it: its log loss is at most the mean of theirs (the loss is convex), whichever of them is really best."""
    judged = _judged(same)
    best, out = same[0], same[:1]
    probs, y = judged(best)
    for c in same[1:]:
        if len(out) == 3:
            break
        if best.task.paired_p(probs, judged(c)[0], y) >= ALPHA:
            out.append(c)
    return out


def _flips(members: list[Candidate], kept: Standing, index, notes: RunNotes, choices) -> tuple[bool, Standing]:
    """Whether averaging each image with its mirror image beats the standing `kept` on validation, and the standing
    kept."""
    for c in members:
        flipped(c, index, ("val",))
    p = sum(c.probs["val"] + c.flipped["val"] for c in members) / (2 * len(members))
    got = standing(p, members[0].labels["val"], members[0].task)
    words, tta = metric_words(members[0]), got.beats(kept)
    choices["tta"] += 1
    mine, theirs = got.words(kept), kept.words(got)
    notes.decide(
        "tta",
        "test-time augmentation (averaging each image with its mirror image) "
        + (f"kept: {words} {mine} against {theirs}" if tta else f"not kept: {words} {mine}, not above {theirs}")
        + " without",
    )
    return tta, got if tta else kept


def final_outcome(members: list[Candidate], tta: bool, index, notes: list[str]) -> RecipeOutcome:
    """One saved model for the chosen members (an ensemble when several) and its probabilities on every split."""
    from smallvision.models.folder import ensemble_layout, head_card

    lead = members[0]
    if tta:
        for c in members:
            flipped(c, index, tuple(s for s in ("val", "test") if s in c.probs))
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
    parts = [(steps.backbone_cards(c.model, c.specs, c.cfg), c.trainable) for c in members]
    cards, trainable = ensemble_layout(model, groups, parts)  # equal backbones (a frozen one) shared among members
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return RecipeOutcome(
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
