"""Head choices on a small validation split are made by k-fold cross-validation on the cached features: every
train and val image scored by a head that never saw it, and the backbone ranking reads those scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from smallvision.auto import crossval, select
from smallvision.config import build_config
from smallvision.engine.stage import Tensors, stage_spec
from smallvision.engine.trainer import fit
from smallvision.recipes.steps import feature_head
from smallvision.task import MULTI_LABEL, SINGLE_LABEL

CFG = build_config({"data": {"path": "x"}, "recipe": {"name": "features", "epochs": 40, "lr": 0.01}})


def _stage(x: np.ndarray, y: np.ndarray) -> SimpleNamespace:
    """A feature stage's arrays as recipes.steps.feature_stage leaves them: train, and val after it."""
    cut = int(0.8 * len(y))
    return SimpleNamespace(by_split={"train": (x[:cut], y[:cut]), "val": (x[cut:], y[cut:])}, task=SINGLE_LABEL)


def test_every_image_is_scored_by_a_head_that_never_saw_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 256)).astype(np.float32)  # more dimensions than images: any labels can be learnt
    y = rng.integers(0, 3, 120)  # labels that carry no signal
    head, _ = feature_head(CFG, 256, 3)
    fit(head, Tensors((x, y), (x, y)), stage_spec(CFG, "all", "head"), SINGLE_LABEL, progress=False)
    with torch.inference_mode():
        seen = SINGLE_LABEL.score(head(torch.from_numpy(x)).numpy(), y)
    folded = crossval.folded(_stage(x, y), 3, CFG, 5)
    assert seen > 0.9  # a head scored on images it fitted memorises them
    assert folded.standing.score < 0.5 and len(folded.scores) == 5  # out of fold: chance, as it should be
    assert np.allclose(folded.probs.sum(1), 1, atol=1e-4) and (folded.labels == y).all()


def test_features_that_carry_the_labels_score_high_and_the_spread_is_said():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    x = (np.eye(3)[y] * 3 + rng.normal(size=(150, 3))).astype(np.float32)
    folded = crossval.folded(_stage(x, y), 3, CFG, 5)
    assert folded.standing.score > 0.85
    assert folded.words() == f"{folded.standing.score:.4f} +- {np.std(folded.scores):.4f}"
    tied = folded.words(folded.standing)  # against an equal score, the loss that decides is shown after the spread
    assert tied == f"{folded.words()} (loss {folded.standing.loss:.4f})"
    assert crossval.folded(_stage(x[:12], np.array([0] * 11 + [1])), 3, CFG, 5) is None  # a class of one


def test_no_fold_head_fits_or_picks_its_epoch_on_the_images_it_scores(monkeypatch):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 100)
    x = np.column_stack([np.arange(100), rng.normal(size=(100, 7))]).astype(np.float32)  # column 0: the image's row
    seen = []

    def recording(head, data, *args, **kwargs):
        seen.append((set(data.train[0][:, 0].astype(int)), set(data.val[0][:, 0].astype(int))))
        return fit(head, data, *args, **kwargs)

    monkeypatch.setattr("smallvision.engine.trainer.fit", recording)
    folded = crossval.folded(_stage(x, y), 3, CFG, 5)
    held = [set(h) for _, h in SINGLE_LABEL.folds(y, 5, CFG.seed)]
    assert len(seen) == len(held) == len(folded.scores) == 5
    for (fitted, picked), out in zip(seen, held, strict=True):
        assert not (fitted | picked) & out and not fitted & picked  # the epoch is picked on a fold of its own
        assert len(fitted | picked | out) == 100


def test_multi_label_heads_fold_across_labels_and_score_macro_map():
    rng = np.random.default_rng(5)
    y = (rng.random((150, 4)) < 0.35).astype(np.float32)
    x = (y * 4 + 0.5 * rng.normal(size=(150, 4))).astype(np.float32)
    fs = SimpleNamespace(by_split={"train": (x[:120], y[:120]), "val": (x[120:], y[120:])}, task=MULTI_LABEL)
    folded = crossval.folded(fs, 4, CFG, 5)
    assert folded.task is MULTI_LABEL and folded.probs.shape == (150, 4) and folded.standing.score > 0.9
    assert MULTI_LABEL.score(folded.probs, y) == folded.standing.score and len(folded.scores) == 5
    tiny = SimpleNamespace(by_split={"train": (x[:6], y[:6]), "val": (x[6:9], y[6:9])}, task=MULTI_LABEL)
    assert crossval.folded(tiny, 4, CFG, 5) is None  # 9 images cannot be folded five ways


def _folded(labels: np.ndarray, wrong: int, rng) -> select.Folded:
    probs = np.full((len(labels), 2), 0.3)
    chosen = labels.copy()
    chosen[:wrong] = 1 - chosen[:wrong]
    probs[np.arange(len(labels)), chosen] = 0.7
    return select.Folded(probs + rng.uniform(0, 1e-6, probs.shape), labels, (0.9, 0.95), SINGLE_LABEL)


def _candidate(name: str, val_wrong: int, folded: select.Folded | None, rng) -> select.Candidate:
    labels = np.arange(40) % 2
    probs = np.full((40, 2), 0.3)
    chosen = labels.copy()
    chosen[:val_wrong] = 1 - chosen[:val_wrong]
    probs[np.arange(40), chosen] = 0.7
    return select.Candidate(name, None, None, None, {"val": probs}, {"val": labels}, [], 1, [], 64, folded=folded)


def test_the_backbones_are_ranked_on_their_cross_validation_when_every_one_has_it():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 600)
    ahead_on_val = _candidate("lite2 features", 0, _folded(labels, 90, rng), rng)  # 40 of 40 on val
    ahead_on_folds = _candidate("lite0 features", 1, _folded(labels, 30, rng), rng)  # 39 of 40, far ahead on 600
    ranked, said = select.rank([ahead_on_val, ahead_on_folds])
    assert ranked[0] is ahead_on_folds and select.cross_validated(ranked)
    assert said.startswith("lite0 features 0.9500 +- 0.0250 against, on the same 600 train+val images: lite2 features")
    # one candidate without a cross-validation (a fine-tuned network): all are ranked on validation
    tuned = _candidate("lite2 fine-tuned", 0, None, rng)
    ranked, said = select.rank([ahead_on_folds, tuned])
    assert ranked[0] is tuned and not select.cross_validated(ranked) and "40 validation images" in said


def test_heads_the_cross_validation_separates_are_not_averaged_as_leaders_and_ones_it_cannot_are():
    """Two heads one image apart on 40 validation images but 60 apart on 600 cross-validated ones: the leader is
    kept alone (no average of the two beats it on validation); wrong on the same images there, their average is kept."""
    from collections import Counter

    from smallvision.results import RunNotes

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 600)
    lead = _candidate("lite0 features", 1, _folded(labels, 30, rng), rng)
    far = _candidate("lite2 features", 0, _folded(labels, 90, rng), rng)
    near = _candidate("lite1 features", 0, _folded(labels, 30, rng), rng)
    notes = RunNotes("auto")
    members, _ = select._averaged(select.rank([far, lead])[0], notes, Counter())
    assert members == [lead] and notes.decisions[-1].text.startswith("no average of candidates beat lite0 features")
    notes = RunNotes("auto")
    members, _ = select._averaged(select.rank([near, lead])[0], notes, Counter())
    assert members == [lead, near]
    assert notes.decisions[-1].text.startswith("cross-validation on train+val cannot tell lite0 features and lite1")
