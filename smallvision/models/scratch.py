"""Small CNNs trained from scratch: the classic Chollet convnet and a residual one.

Each returns features (the flattened or pooled conv output); the shared Head adds dropout and dense layers, so
`small_cnn` + Head(hidden=512) is exactly Conv 32-64-128-128 with max pooling, flatten, dense 512, dense out.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class SmallCNN(nn.Module):
    """Chollet's cats-vs-dogs convnet: four conv + max-pool stages, then flatten."""

    def __init__(self, image_size: int, batch_norm: bool = False, widths=(32, 64, 128, 128)) -> None:
        super().__init__()
        self.image_size = image_size  # flattened features: the one input size this network takes
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(*_conv(cin, w, batch_norm), nn.MaxPool2d(2)))
            cin = w
        self.stages = nn.Sequential(*stages)
        side = image_size
        for _ in widths:
            side //= 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} pooling stages")
        self.num_features = cin * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened conv features."""
        return self.stages(x).flatten(1)

    def group_matcher(self, coarse: bool = True) -> dict:
        """Block groups for freezing and inspection: one per conv stage."""
        return {"stem": r"^stages\.0\.", "blocks": r"^stages\.(\d+)"}


class ResidualBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with a shortcut (1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum, then ReLU."""
        return torch.relu(self.body(x) + self.shortcut(x))


class ResidualCNN(nn.Module):
    """A small ResNet: conv stem, residual stages (stride 2 each), global average pooling."""

    def __init__(self, image_size: int, batch_norm: bool = True, widths=(32, 64, 128, 256)) -> None:
        super().__init__()
        self.image_size = None  # pooled features: any input size runs
        self.stem = nn.Sequential(*_conv(3, widths[0], True), nn.MaxPool2d(2))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResidualBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features."""
        return self.pool(self.blocks(self.stem(x))).flatten(1)

    def group_matcher(self, coarse: bool = True) -> dict:
        """Block groups for freezing and inspection: the stem, then one per residual stage."""
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}


SCRATCH = {"small_cnn": SmallCNN, "residual_cnn": ResidualCNN}


def build_scratch(name: str, image_size: int, batch_norm: bool) -> nn.Module:
    """A from-scratch network by name, randomly initialised."""
    return SCRATCH[name](image_size, batch_norm)
