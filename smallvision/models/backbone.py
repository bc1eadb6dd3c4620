"""timm backbones wrapped with their own input normalization, so joined backbones each see what they expect."""

from __future__ import annotations

import torch
from torch import nn

from smallvision.errors import SmallvisionError
from smallvision.models.weights import WeightsSpec, load_pretrained, normalization_for

POOLS = ("avg", "max", "none")


class Backbone(nn.Module):
    """A timm feature extractor: [0, 1] RGB images in, one feature vector per image out."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], pool: str) -> None:
        super().__init__()
        self.net = net
        self.pool = pool
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize, run the network, pool (or flatten) to (N, features)."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.net(x).flatten(1)

    def feature_dim(self, image_size: int) -> int:
        """Length of the feature vector for square images of `image_size`."""
        if self.pool != "none":
            return int(self.net.num_features)
        with torch.inference_mode():
            return int(self.forward(torch.zeros(1, 3, image_size, image_size)).shape[1])


def _timm_pool(pool: str) -> str:
    if pool not in POOLS:
        raise SmallvisionError(f"pool {pool!r} unknown; use one of {', '.join(POOLS)}")
    return "" if pool == "none" else pool


def build_backbone(spec: WeightsSpec, pool: str = "avg") -> Backbone:
    """A backbone with its pretrained weights loaded from `spec` (classifier removed)."""
    net = load_pretrained(spec) if spec.pretrained else _bare(spec.backbone)
    net.reset_classifier(0, _timm_pool(pool))
    mean, std = normalization_for(spec, net)
    return Backbone(net, mean, std, pool)


def _bare(name: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False)
    except Exception as e:
        raise SmallvisionError(f"unknown backbone {name!r}: not a timm architecture (see timm.list_models())") from e


def bare_backbone(name: str, pool: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Backbone:
    """The same architecture without weights, for loading a saved model (weights come from its folder)."""
    net = _bare(name)
    net.reset_classifier(0, _timm_pool(pool))
    return Backbone(net, mean, std, pool)
