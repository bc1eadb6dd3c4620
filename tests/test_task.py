"""The task seam: single-label's loss, probabilities, decision and score, and no other module choosing them itself."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from smallvision.task import SINGLE_LABEL

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
