"""auto chooses on signal, not noise: a lead that the validation split cannot resolve (a paired test on the same
images) is settled by validation loss, and the note says how sure each choice was."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from smallvision.auto import select
from smallvision.results import RunNotes
from smallvision.task import MULTI_LABEL, SINGLE_LABEL


def _candidate(name: str, probs: np.ndarray, labels: np.ndarray) -> select.Candidate:
    return select.Candidate(name, None, None, None, {"val": probs}, {"val": labels}, [], 1, [], 64)


def _confident(labels: np.ndarray, wrong: int, confidence: float, rng) -> np.ndarray:
    """Two-class probabilities right on all but the first `wrong` images, at `confidence` on the chosen class."""
    chosen = labels.copy()
    chosen[:wrong] = 1 - chosen[:wrong]
    probs = np.full((len(labels), 2), 1 - confidence)
    probs[np.arange(len(labels)), chosen] = confidence
    return probs + rng.uniform(0, 1e-6, probs.shape)


def test_a_one_image_lead_is_noise_and_the_lower_validation_loss_decides():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    head = _candidate("head", _confident(labels, 1, 0.6, rng), labels)  # 399 right, hesitantly
    tuned = _candidate("tuned", _confident(labels, 2, 0.99, rng), labels)  # 398 right, surely
    ranked, said = select.rank([head, tuned])
    assert head.val > tuned.val and ranked[0] is tuned
    assert "cannot tell head (val accuracy 0.9975) from tuned (0.9950" in said
    assert "p=1.00 >= 0.05" in said and "lower validation loss decided" in said


def test_a_lead_the_split_resolves_is_kept_whatever_the_loss():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    head = _candidate("head", _confident(labels, 2, 0.6, rng), labels)
    tuned = _candidate("tuned", _confident(labels, 40, 0.99, rng), labels)  # 38 more wrong: p far below 0.05
    ranked, said = select.rank([tuned, head])
    assert ranked[0] is head and "tuned 0.9000 (p=0.00)" in said


def test_the_best_candidates_rounds_go_to_the_one_the_split_can_tell_is_best(monkeypatch):
    from smallvision.auto import execute
    from smallvision.auto.plan import Round

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    lite0 = _candidate("lite0 features", _confident(labels, 1, 0.6, rng), labels)  # one image ahead, hesitantly
    lite2 = _candidate("lite2 features", _confident(labels, 2, 0.99, rng), labels)
    lite1 = _candidate("lite1 features", _confident(labels, 30, 0.99, rng), labels)  # clearly behind both
    tuned = []  # which candidate each set of rounds fine-tuned (the rounds themselves are tested in test_auto.py)
    monkeypatch.setattr(execute, "_finetune", lambda *a: tuned.append((a[2].name, a[10].rank)))
    plan = SimpleNamespace(rounds=[Round(1, 2, 1e-4)], runner_up=[Round(1, 2, 1e-4)])
    notes = RunNotes("auto")
    execute._fine_tuned(None, plan, [lite1, lite0, lite2], None, None, 0.0, False, notes, None, None)
    assert lite0.val > lite2.val  # the third one's rounds come last, on the time left (the clock checks them)
    assert tuned == [("lite2 features", 0), ("lite0 features", 1), ("lite1 features", 2)]
    said = notes.decisions[-1]  # why the one with the lower score is fine-tuned first
    assert said.kind == "uncertainty" and said.text.startswith(
        "fine-tuned first: the 400 validation images cannot tell"
    )


def test_paired_tests_of_both_tasks():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    same = _confident(labels, 10, 0.8, rng)
    assert SINGLE_LABEL.paired_p(same, same, labels) == 1.0
    assert SINGLE_LABEL.paired_p(same, _confident(labels, 60, 0.8, rng), labels) < 1e-6
    truth = rng.random((200, 4)) < 0.3
    good = np.clip(truth + rng.normal(0, 0.3, truth.shape), 0, 1)
    noise = rng.random(truth.shape)
    assert MULTI_LABEL.paired_p(good, noise, truth.astype(float)) < 0.05
    assert MULTI_LABEL.paired_p(good, good + 1e-9, truth.astype(float)) == pytest.approx(1.0)
    assert MULTI_LABEL.log_loss(good, truth) < MULTI_LABEL.log_loss(noise, truth)


def _tally():
    from collections import Counter

    return SimpleNamespace(choices=Counter())


def _sure(labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Two-class probabilities at `confidence` (one per image) on the true class; below 0.5 an image is wrong."""
    probs = np.empty((len(labels), 2))
    probs[np.arange(len(labels)), labels] = confidence
    probs[np.arange(len(labels)), 1 - labels] = 1 - confidence
    return probs


def test_the_leaders_validation_cannot_tell_apart_are_averaged_unless_the_average_scores_below_the_best():
    """Two networks wrong on the same one of 43 images tie; a third wrong on two more is one McNemar cannot separate
    from them either (p=0.5), one wrong on 12 it can: the first three are averaged, a fourth as good as the best is
    left out (three at most), and so is the fifth. An average of tied networks that is wrong where the best is right
    (a sure miss outweighs a hesitant hit) is not kept."""
    labels = np.random.default_rng(4).integers(0, 2, 43)
    halves = np.r_[[0.4], np.full(21, 0.95), np.full(21, 0.6)]
    a = _candidate("a", _sure(labels, halves), labels)
    b = _candidate("b", _sure(labels, np.r_[halves[:1], halves[22:], halves[1:22]]), labels)  # sure on a's doubts
    c = _candidate("c", _sure(labels, np.r_[[0.4, 0.45, 0.45], np.full(40, 0.8)]), labels)
    d = _candidate("d", _sure(labels, np.r_[[0.4], np.full(42, 0.7)]), labels)
    far = _candidate("far", _sure(labels, np.r_[np.full(13, 0.3), np.full(30, 0.99)]), labels)
    assert a.standing.ties(b.standing) and a.standing.ties(d.standing) and c.val < a.val
    assert SINGLE_LABEL.paired_p(a.probs["val"], far.probs["val"], labels) < select.ALPHA
    notes, tally = RunNotes("auto"), _tally()
    members, kept = select._averaged([a, b, c, d, far], notes, tally.choices)
    assert members == [a, b, c] and kept.score >= a.val
    assert kept.loss == pytest.approx(select.standing(sum(m.probs["val"] for m in members) / 3, labels, a.task).loss)
    assert tally.choices["average"] == 10 + 10  # the leaders' average, then every other pair and trio of five
    (said,) = [n.text for n in notes.decisions]
    assert said.startswith("validation cannot tell a and b and c apart (paired test p >= 0.05): averaged their")
    assert said.endswith("; no other average beat it")
    sure = _candidate("sure", _sure(labels, np.r_[[0.4], np.full(42, 0.55)]), labels)
    missed = _candidate("missed", _sure(labels, np.r_[[0.4], [0.05, 0.05], np.full(40, 0.99)]), labels)
    notes = RunNotes("auto")
    members, kept = select._averaged([sure, missed], notes, _tally().choices)
    assert members == [sure] and kept.score == sure.val
    (said,) = [n.text for n in notes.decisions]
    assert said.endswith("their average scores below sure alone on validation; no other average beat sure alone")


def test_an_average_that_beats_the_leaders_average_and_each_alone_replaces_it_and_the_notes_say_so():
    """The third network hesitant where the first two are sure: their pair's average has a loss lower than the three's
    on most images (a Wilcoxon test resolves it), so the pair replaces the leaders' average."""
    labels = np.random.default_rng(4).integers(0, 2, 43)
    halves = np.r_[[0.4], np.full(21, 0.95), np.full(21, 0.6)]
    a = _candidate("a", _sure(labels, halves), labels)
    b = _candidate("b", _sure(labels, np.r_[halves[:1], halves[22:], halves[1:22]]), labels)
    c = _candidate("c", _sure(labels, np.r_[[0.4, 0.45, 0.45], np.full(40, 0.6)]), labels)
    notes = RunNotes("auto")
    members, kept = select._averaged([a, b, c], notes, _tally().choices)
    assert members == [a, b] and kept.score == a.val
    first, then = (n.text for n in notes.decisions)
    assert first.startswith("validation cannot tell a and b and c apart") and first.endswith(", replaced below")
    assert then.startswith("averaged the probabilities of a and b: val accuracy 0.9767 (loss ")
    assert then.endswith("and above the leaders' average")


def test_an_average_with_a_candidate_the_best_clearly_beats_is_kept_only_on_a_lower_loss_the_split_resolves():
    """400 images: `lead` right on all, hesitantly; `behind` wrong on 40 (McNemar separates them) but sure of the
    rest. Their average is right everywhere, as the lead is, with a lower loss on 360 images: kept, above each alone.
    One sure of only 15 more has an average with a lower mean loss too, but higher on 40 images: not kept."""
    labels = np.random.default_rng(6).integers(0, 2, 400)
    lead = _candidate("lead", _sure(labels, np.full(400, 0.6)), labels)
    behind = _candidate("behind", _sure(labels, np.r_[np.full(40, 0.49), np.full(360, 0.99)]), labels)
    assert SINGLE_LABEL.paired_p(lead.probs["val"], behind.probs["val"], labels) < select.ALPHA
    notes = RunNotes("auto")
    members, kept = select._averaged([lead, behind], notes, _tally().choices)
    assert members == [lead, behind] and kept.score == lead.val and kept.loss < lead.standing.loss
    assert notes.decisions[-1].text.startswith("averaged the probabilities of lead and behind: val accuracy 1.0000")
    few = _candidate("few", _sure(labels, np.r_[np.full(40, 0.49), np.full(15, 0.999), np.full(345, 0.6)]), labels)
    average = select.standing((lead.probs["val"] + few.probs["val"]) / 2, labels, SINGLE_LABEL)
    assert average.ties(lead.standing) and average.loss < lead.standing.loss
    members, kept = select._averaged([lead, few], RunNotes("auto"), _tally().choices)
    assert members == [lead] and kept.loss == lead.standing.loss


def test_a_fine_tuning_round_that_ties_on_accuracy_improves_on_a_resolved_lower_loss():
    from smallvision.auto import execute
    from smallvision.auto.plan import Round

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 43)
    base = _candidate("lite2 features", _sure(labels, np.r_[[0.4], np.full(42, 0.7)]), labels)
    base.cfg = SimpleNamespace(model=SimpleNamespace(backbone="efficientnet_lite2"))
    surer = select.standing(_sure(labels, np.r_[[0.4], np.full(42, 0.9)]), labels, SINGLE_LABEL)
    on_three = select.standing(_sure(labels, np.r_[[0.4], np.full(3, 0.9), np.full(39, 0.7)]), labels, SINGLE_LABEL)
    hesitant = select.standing(_sure(labels, np.r_[[0.4], np.full(42, 0.6)]), labels, SINGLE_LABEL)
    worse = select.standing(_sure(labels, np.r_[[0.4, 0.4], np.full(41, 0.99)]), labels, SINGLE_LABEL)
    assert on_three.loss < base.standing.loss and worse.loss < base.standing.loss
    notes, tally = RunNotes("auto"), _tally()
    rnd = Round(1, 6, 3e-4)
    improved = [
        execute._improved(base, "round 1", rnd, ["blocks.6"], (got, 3), base.standing, notes, tally)
        for got in (surer, on_three, hesitant, worse)
    ]
    assert improved == [True, False, False, False] and tally.choices["finetune_round"] == 4
    said = [d.text for d in notes.decisions]
    shown = f"best val accuracy {base.val:.4f} (loss {surer.loss:.4f}) at epoch 3, better than {base.val:.4f} (loss"
    assert shown in said[0] and said[1].endswith(f"(loss {base.standing.loss:.4f}): stopped here")
    assert said[3].endswith(f"not better than {base.val:.4f}: stopped here")  # scores differ: no loss shown


def test_flipped_views_that_tie_on_accuracy_are_kept_on_a_resolved_lower_loss():
    labels = np.random.default_rng(6).integers(0, 2, 43)
    a = _candidate("a", _sure(labels, np.r_[[0.4], np.full(42, 0.7)]), labels)
    a.flipped["val"] = _sure(labels, np.r_[[0.4], np.full(42, 0.9)])  # the mirror images, read surer
    notes = RunNotes("auto")
    tta, kept = select._flips([a], a.standing, None, notes, _tally().choices)
    assert tta and kept.score == a.val and kept.loss < a.standing.loss
    assert "kept: val accuracy" in notes.decisions[-1].text and "(loss " in notes.decisions[-1].text
    for mirror in (np.full(42, 0.55), np.r_[np.full(4, 0.95), np.full(38, 0.7)]):  # less sure; surer on 4 only
        a.flipped["val"] = _sure(labels, np.r_[[0.4], mirror])
        tta, kept = select._flips([a], a.standing, None, RunNotes("auto"), _tally().choices)
        assert not tta and kept.loss == a.standing.loss


def test_scores_apart_by_float_noise_tie_and_the_loss_decides():
    """Macro mAP computed two ways may differ by 1e-16: that is a tie, not a higher score."""
    losses = np.linspace(0.1, 0.5, 40)
    sure, unsure = select.Standing(0.9, losses), select.Standing(0.9 + 1e-12, losses + 0.05)
    assert sure.ties(unsure) and sure.beats(unsure) and not unsure.beats(sure)
    assert select.Standing(0.9 + 1e-6, losses + 0.05).beats(sure)
    assert sure.words(unsure) == f"0.9000 (loss {sure.loss:.4f})" and sure.words() == "0.9000"
    assert not sure.beats(select.Standing(0.9, losses))  # the same losses: p = 1


def test_a_lower_mean_loss_from_a_few_images_is_not_signal():
    """Worse on 40 of 43 images and far better on 3: a lower mean, but the paired test points the other way. Better
    on 5 images and equal on the rest (two saturated softmaxes): too few to resolve."""
    base = np.full(43, 0.2)
    few_far = select.Standing(0.9, np.r_[np.full(40, 0.21), np.full(3, 0.0)])
    assert few_far.loss < 0.2 and not few_far.beats(select.Standing(0.9, base))
    assert select.lower_p(few_far.losses, base) > 0.5  # the direction of most images, not of the mean
    five = select.Standing(0.9, np.r_[np.full(5, 0.1), np.full(38, 0.2)])
    assert five.loss < 0.2 and not five.beats(select.Standing(0.9, base))
    assert select.lower_p(five.losses, base) == pytest.approx(1 / 32)  # exact, on the five that differ
    many = select.Standing(0.9, np.r_[np.full(12, 0.1), np.full(31, 0.2)])
    assert many.beats(select.Standing(0.9, base))
    assert select.lower_p(base[:5], base) == 1.0  # not the same images: no paired test
