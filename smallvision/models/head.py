"""Classifier heads, and the full classifier: one or more backbones joined, then a head."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Dropout + dense layer(s) from features to class logits (optionally one hidden ReLU layer)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int = 0) -> None:
        super().__init__()
        if hidden:
            layers = [nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
            layers.append(nn.Linear(hidden, num_classes))
        else:
            layers = [nn.Dropout(dropout), nn.Linear(in_features, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of feature vectors."""
        return self.layers(features)


class ImageClassifier(nn.Module):
    """Backbones (their pooled features concatenated) followed by a head; input is [0, 1] RGB NCHW."""

    def __init__(self, backbones: list[nn.Module], head: Head) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(backbones)
        self.head = head

    def train(self, mode: bool = True) -> ImageClassifier:
        """Set training mode, but keep frozen backbone parts (BatchNorm statistics included) in eval mode."""
        super().train(mode)
        if mode:
            from smallvision.models.backbone import keep_frozen_in_eval

            for b in self.backbones:
                keep_frozen_in_eval(b)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The joined feature vector of every backbone."""
        feats = [b(x) for b in self.backbones]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.head(self.features(x).float())
