"""Metrics against hand-computed values, including a class that is never predicted; ECE, Wilson interval, AUCs."""

from __future__ import annotations

import numpy as np
import pytest

from smallvision.evaluation.metrics import calibration, classification_metrics, wilson_interval


def test_hand_computed_three_classes_one_never_predicted():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 ("c") is never predicted
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), pred] = 0.8
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]  # rows are true labels
    pc = m["per_class"]
    assert pc["a"] == {
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "accuracy": pytest.approx(2 / 3),
        "support": 3,
    }
    assert pc["b"]["precision"] == pytest.approx(0.5) and pc["b"]["recall"] == 1.0
    assert pc["b"]["f1"] == pytest.approx(2 / 3)
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0, "support": 1}
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * 0.8 + 2 * 2 / 3) / 6)
    assert m["precision_micro"] == m["recall_micro"] == m["f1_micro"] == pytest.approx(4 / 6)
    assert m["loss"] == pytest.approx(-(4 * np.log(0.8) + 2 * np.log(0.1)) / 6)
    assert "c" in m["report"]


def test_confusion_matrix_orientation_rows_true_columns_predicted():
    probs = np.array([[0.1, 0.9]])
    m = classification_metrics(np.array([0]), probs, ["zero", "one"])
    assert m["confusion_matrix"] == [[0, 1], [0, 0]]


def test_ece_by_hand_fifteen_bins():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.42, 0.58], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    cal = calibration(y, probs)
    # bin (13/15, 14/15]: confidences 0.9, 0.9, one right -> |0.5 - 0.9| on 2 of 4 predictions
    # bin (8/15, 9/15]: confidences 0.58, 0.55, both right -> |1 - 0.565| on 2 of 4
    assert cal["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.435)
    assert [(b["n"], b["accuracy"]) for b in cal["bins"]] == [(2, 1.0), (2, 0.5)]
    assert cal["bins"][0]["low"] == pytest.approx(8 / 15) and cal["bins"][1]["high"] == pytest.approx(14 / 15)
    perfect = np.eye(2)[[0, 1, 1]]
    assert calibration(np.array([0, 1, 1]), perfect)["ece"] == 0.0


def test_wilson_interval_matches_the_published_formula():
    lo, hi = wilson_interval(8, 10)  # Wilson (1927); 8/10 at 95%: 0.490 to 0.943
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    assert wilson_interval(60, 60) == pytest.approx((0.9398, 1.0), abs=1e-4)
    for n in (1, 6, 18, 30, 153):  # the interval always holds the accuracy itself, 0 and 1 included
        for k in (0, n):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi


def test_auc_and_most_confused_in_classification_metrics():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    probs = rng.dirichlet(np.ones(3), size=len(y))
    m = classification_metrics(y, probs, ["a", "b", "c"])
    for i, name in enumerate("abc"):
        assert m["roc_auc"][name] == pytest.approx(roc_auc_score(y == i, probs[:, i]))
        assert m["average_precision"][name] == pytest.approx(average_precision_score(y == i, probs[:, i]))
    cm = np.array(m["confusion_matrix"])
    assert m["most_confused"][0][2] == cm[~np.eye(3, dtype=bool)].max()
    assert sum(c for _, _, c in m["most_confused"]) == len(y) - np.trace(cm)
    assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    absent = classification_metrics(np.array([0, 0]), np.array([[0.7, 0.3], [0.6, 0.4]]), ["a", "b"])
    assert absent["roc_auc"] == {"a": None, "b": None} and absent["roc_auc_macro"] is None
