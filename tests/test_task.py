"""The task seam: single-label's loss, probabilities, decision and score, and no other module choosing them itself."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from smallvision.task import MULTI_LABEL, SINGLE_LABEL

PACKAGE = Path(__file__).resolve().parents[1] / "smallvision"
# What only the task may call: the probabilities, the decision and the loss of a task.
TASK_CALLS = {
    *("softmax", "log_softmax", "argmax", "sigmoid", "Softmax", "LogSoftmax", "Sigmoid"),
    *("cross_entropy", "CrossEntropyLoss", "nll_loss", "NLLLoss", "binary_cross_entropy_with_logits"),
    "BCEWithLogitsLoss",
}


def test_single_label_is_softmax_top1_and_cross_entropy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 1])
    probs = SINGLE_LABEL.probabilities(logits)
    assert torch.allclose(probs.sum(1), torch.ones(2)) and probs[0, 0] > probs[0, 1] > probs[0, 2]
    assert SINGLE_LABEL.decide(probs).tolist() == [0, 2] == SINGLE_LABEL.decide(probs.numpy()).tolist()
    assert SINGLE_LABEL.correct(logits, labels).tolist() == [True, False]
    expected = -(math.log(probs[0, 0]) + math.log(probs[1, 1])) / 2
    assert float(SINGLE_LABEL.loss(logits, labels)) == pytest.approx(expected, rel=1e-6)
    weighted = SINGLE_LABEL.loss_module(torch.tensor([1.0, 3.0, 1.0]))(logits, labels)
    assert float(weighted) == pytest.approx((-math.log(probs[0, 0]) - 3 * math.log(probs[1, 1])) / 4, rel=1e-6)
    assert SINGLE_LABEL.score(probs.numpy(), labels.numpy()) == 0.5
    assert math.isnan(SINGLE_LABEL.score(np.zeros((0, 3)), np.zeros(0, dtype=int)))
    assert np.allclose(SINGLE_LABEL.probabilities_of(logits.numpy()), probs.numpy())


def test_averaging_members_in_log_space_is_the_mean_of_their_probabilities():
    members = [torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]]), torch.tensor([[-60.0, 60.0]])]
    combined = SINGLE_LABEL.mean_log_probabilities(members)
    mean = torch.stack([m.softmax(1) for m in members]).mean(0)
    assert torch.allclose(combined.exp(), mean, atol=1e-6) and torch.isfinite(combined).all()
    assert torch.allclose(SINGLE_LABEL.probabilities(combined), mean, atol=1e-6)
    assert torch.equal(SINGLE_LABEL.mean_log_probabilities(members[:1]), members[0].log_softmax(1))


def task_calls(path: Path) -> list[str]:
    """Every call in `path` of what only the task may call (x.softmax(...), F.cross_entropy(...), np.argmax(...))."""
    tree = ast.parse(path.read_text())
    return [
        f"{path.name}:{node.lineno}: {node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")) in TASK_CALLS
    ]


def test_only_the_task_computes_probabilities_decisions_and_losses():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "task.py" for hit in task_calls(p)]
    assert not found, "ask smallvision.task instead:\n" + "\n".join(found)


def test_the_seam_check_sees_a_softmax(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import numpy as np\n\ndef f(x, m):\n    return m(x).softmax(1), np.argmax(x, axis=1)\n")
    assert task_calls(sample) == ["sample.py:4: softmax", "sample.py:4: argmax"]


def test_multi_label_is_sigmoid_per_label_bce_and_macro_map():
    from sklearn.metrics import average_precision_score

    from smallvision.task import MULTI_LABEL

    logits = torch.tensor([[2.0, -1.0, 0.3], [-2.0, 1.5, -0.2], [0.5, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    probs = MULTI_LABEL.probabilities(logits)
    assert torch.allclose(probs, 1 / (1 + torch.exp(-logits)))
    assert MULTI_LABEL.decide(probs.numpy(), np.array([0.5, 0.9, 0.5])).tolist() == [
        [True, False, True],
        [False, False, False],
        [True, False, False],
    ]
    bce = -(targets * probs.log() + (1 - targets) * (1 - probs).log()).mean()
    assert float(MULTI_LABEL.loss(logits, targets)) == pytest.approx(float(bce), rel=1e-6)
    weighted = MULTI_LABEL.loss_module(torch.tensor([3.0, 1.0, 1.0]))(logits, targets)
    assert float(weighted) > float(bce)  # the positives of label 0 weigh three times
    expected = average_precision_score(targets.numpy(), probs.numpy(), average="macro")
    assert MULTI_LABEL.score(probs.numpy(), targets.numpy()) == pytest.approx(expected)
    assert MULTI_LABEL.metric_of(logits, targets) == pytest.approx(expected)
    no_positive = targets.clone()
    no_positive[:, 2] = 0  # a label absent from the split leaves the mean instead of counting as 0
    present = average_precision_score(no_positive.numpy()[:, :2], probs.numpy()[:, :2], average="macro")
    assert MULTI_LABEL.score(probs.numpy(), no_positive.numpy()) == pytest.approx(present)
    members = [torch.tensor([[4.0, -4.0]]), torch.tensor([[-4.0, 0.0]])]
    mean = torch.stack([m.sigmoid() for m in members]).mean(0)
    assert torch.allclose(MULTI_LABEL.probabilities(MULTI_LABEL.mean_log_probabilities(members)), mean, atol=1e-6)
    with pytest.raises(ValueError, match="single-label option"):
        MULTI_LABEL.loss_module(label_smoothing=0.1)


def test_separable_labels_keep_their_own_f1_best_thresholds_and_rare_labels_take_the_global_one():
    from smallvision.task import MULTI_LABEL

    rng = np.random.default_rng(0)
    n = 200
    truth = np.zeros((n, 3), dtype=np.float32)
    truth[:, 0] = rng.random(n) < 0.5
    truth[:, 1] = rng.random(n) < 0.5
    truth[:3, 2] = 1  # three positives: too few to tune
    probs = np.empty((n, 3), dtype=np.float32)
    probs[:, 0] = np.where(truth[:, 0] > 0, rng.uniform(0.30, 0.40, n), rng.uniform(0.0, 0.25, n))  # cut near 0.3
    probs[:, 1] = np.where(truth[:, 1] > 0, rng.uniform(0.85, 1.0, n), rng.uniform(0.0, 0.75, n))  # cut near 0.8
    probs[:, 2] = rng.uniform(0, 1, n)
    chosen, glob = MULTI_LABEL.thresholds(probs, truth)
    assert 0.25 < chosen[0] <= 0.30 + 1e-6 and 0.75 - 1e-6 <= chosen[1] <= 0.85 + 1e-6
    assert chosen[2] == pytest.approx(glob)
    pred = MULTI_LABEL.decide(probs[:, :2], chosen[:2])
    assert (pred == (truth[:, :2] > 0)).all()


def test_a_labels_own_threshold_is_kept_only_where_it_does_not_lower_the_f1_per_image():
    """An uninformative label's F1 peaks by predicting it everywhere (a threshold near 0): that would add a wrong
    label to most images, so it keeps the global threshold; an informative label keeps its own."""
    from sklearn.metrics import f1_score

    from smallvision.task import MULTI_LABEL

    rng = np.random.default_rng(1)
    n = 300
    truth = np.zeros((n, 2), dtype=np.float32)
    truth[:, 0] = rng.random(n) < 0.6
    truth[:, 1] = rng.random(n) < 0.2
    probs = np.empty((n, 2), dtype=np.float32)
    probs[:, 0] = np.where(truth[:, 0] > 0, rng.uniform(0.6, 0.8, n), rng.uniform(0.0, 0.35, n))
    probs[:, 1] = 0.4  # knows nothing
    own_f1 = max(np.round(np.arange(0.05, 0.951, 0.05), 2), key=lambda t: f1_score(truth[:, 1], probs[:, 1] >= t))
    assert (probs[:, 1] >= own_f1).all()  # alone, its F1 would choose to predict it everywhere
    chosen, glob = MULTI_LABEL.thresholds(probs, truth)
    assert ((probs[:, 0] >= chosen[0]) == (truth[:, 0] > 0)).all()
    assert chosen[1] == pytest.approx(glob) and glob > 0.4  # not predicted anywhere
    per_image = f1_score(truth > 0, probs >= chosen, average="samples", zero_division=0)
    broad = f1_score(truth > 0, probs >= np.array([chosen[0], own_f1]), average="samples", zero_division=0)
    assert per_image > broad


def test_the_bootstraps_average_precision_is_scikit_learns():
    """Ties (a bootstrap repeats images; rounded scores tie) and a label without a positive included."""
    from sklearn.metrics import average_precision_score

    from smallvision.task import average_precisions

    rng = np.random.default_rng(3)
    truth = rng.random((300, 5)) < [0.5, 0.2, 0.05, 0.0, 0.9]
    probs = np.round(np.clip(truth * 0.3 + rng.random((300, 5)) * 0.7, 0, 1), 2)  # two decimals: many ties
    rows = rng.integers(0, 300, 300)
    for t, p in ((truth, probs), (truth[rows], probs[rows])):
        ours = average_precisions(t, p)
        assert np.isnan(ours[3])
        for j in (0, 1, 2, 4):
            assert ours[j] == pytest.approx(average_precision_score(t[:, j], p[:, j]), abs=1e-12)


def test_folds_hold_out_every_image_once_stratified_by_class_or_across_labels():
    rng = np.random.default_rng(3)
    single = np.repeat(np.arange(3), [40, 20, 10])
    multi = (rng.random((90, 5)) < [0.5, 0.3, 0.2, 0.1, 0.05]).astype(np.float32)
    for task, labels in ((SINGLE_LABEL, single), (MULTI_LABEL, multi)):
        folds = task.folds(labels, 5, seed=0)
        held = np.concatenate([h for _, h in folds])
        assert len(folds) == 5 and sorted(held) == list(range(len(labels)))  # each image held out exactly once
        for fitted, out in folds:
            assert not set(fitted) & set(out) and len(fitted) + len(out) == len(labels)
            share = np.asarray(labels)[out].mean(0) if task is MULTI_LABEL else np.bincount(labels[out]) / len(out)
            whole = np.asarray(labels).mean(0) if task is MULTI_LABEL else np.bincount(labels) / len(labels)
            assert np.abs(share - whole).max() < 0.08  # each fold resembles the whole
        assert [h.tolist() for _, h in task.folds(labels, 5, seed=0)] == [h.tolist() for _, h in folds]  # seeded
    # a class of 3 images allows 3 folds; one of a single image allows none (it could not be learnt and held out)
    assert len(SINGLE_LABEL.folds(np.array([0] * 9 + [1] * 3), 5, 0)) == 3
    assert SINGLE_LABEL.folds(np.array([0] * 9 + [1]), 5, 0) == []
    assert MULTI_LABEL.folds(multi[:9], 5, 0) == []
