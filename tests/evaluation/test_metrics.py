"""Metrics against hand-computed values, including a class that is never predicted."""

from __future__ import annotations

import numpy as np
import pytest

from smallvision.evaluation.metrics import classification_metrics


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
