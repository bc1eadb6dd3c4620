"""What a model predicts and how it is scored: the one place that chooses the loss, the probabilities, the decision
and the score that model selection maximises.

Every training loop, ensemble, flip average, export, evaluation and server asks the task; none calls softmax, argmax
or a cross-entropy itself. Single-label (one class per image: softmax, the top class, cross-entropy) is the task
today; multi-label (sigmoid, per-label thresholds, binary cross-entropy) is one more class with the same methods.
Works on torch tensors and NumPy arrays alike where both are passed (argmax, comparisons); torch is imported only by
the methods that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class SingleLabel:
    """One class per image: softmax probabilities, the most probable class, cross-entropy, accuracy."""

    name = "single_label"

    def loss_module(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.nn.Module:
        """The training loss, with optional class weights and label smoothing."""
        import torch

        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The plain (unweighted, unsmoothed) loss: what validation reports and best-epoch keeping compares."""
        import torch

        return torch.nn.functional.cross_entropy(logits, targets)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's outputs as probabilities (rows sum to one)."""
        return logits.softmax(1)

    def log_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """log(probabilities), computed stably."""
        return logits.log_softmax(1)

    def mean_log_probabilities(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """log(mean_k probabilities(outputs_k)), as a log-sum-exp of log-probabilities: never log 0, and its
        probabilities are exactly the averaged ones (so decisions and losses downstream keep working)."""
        import math

        import torch

        if len(outputs) == 1:
            return self.log_probabilities(outputs[0])
        logs = torch.stack([self.log_probabilities(o.float()) for o in outputs])
        return torch.logsumexp(logs, 0) - math.log(len(outputs))

    def probabilities_of(self, logits: np.ndarray) -> np.ndarray:
        """`probabilities` for NumPy logits (computed in float32 by torch, as the model's own are)."""
        import torch

        return self.probabilities(torch.from_numpy(np.asarray(logits)).float()).numpy()

    def decide(self, scores: Any) -> Any:
        """The predicted class of each row of probabilities (or of any per-class scores)."""
        return scores.argmax(1)

    def correct(self, scores: Any, labels: Any) -> Any:
        """Per row: whether the decision is the label (a bool tensor or array)."""
        return self.decide(scores) == labels

    def score(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """What model selection maximises: accuracy (NaN on an empty split)."""
        return float(self.correct(probs, np.asarray(labels)).mean()) if len(labels) else float("nan")


SINGLE_LABEL = SingleLabel()
