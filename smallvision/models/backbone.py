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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB images to the network's input scale."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize, run the network, pool (or flatten) to (N, features)."""
        return self.net(self.normalize(x)).flatten(1)

    def check_size(self, image_size: int, name: str) -> None:
        """Refuse an input size the network cannot take (timm's ViTs fix theirs), before it fails deep inside timm."""
        embed = getattr(self.net, "patch_embed", None)
        fixed = getattr(embed, "img_size", None) if getattr(embed, "strict_img_size", False) else None
        if fixed is not None and tuple(fixed) != (image_size, image_size):
            raise SmallvisionError(
                f"backbone {name!r} takes {fixed[0]}x{fixed[1]} images only; got --image-size {image_size}. "
                f"Fix: --image-size {fixed[0]}"
            )

    def feature_dim(self, image_size: int) -> int:
        """Length of the feature vector for square images of `image_size`.

        Pooled, it is timm's pre-logits width: `head_hidden_size` where the head has layers after the pooling
        (MobileNetV3's conv_head: 1024 wide where num_features, the feature map's channels, is 288), else
        `num_features`. Unpooled, it depends on the image size, so it is measured.
        """
        if self.pool != "none":
            return int(getattr(self.net, "head_hidden_size", None) or self.net.num_features)
        with torch.inference_mode():
            return int(self.forward(torch.zeros(1, 3, image_size, image_size)).shape[1])


def _timm_pool(pool: str) -> str:
    if pool not in POOLS:
        raise SmallvisionError(f"pool {pool!r} unknown; use one of {', '.join(POOLS)}")
    return "" if pool == "none" else pool


def _reset_head(net: nn.Module, pool: str) -> None:
    """Drop timm's classifier and set its global pooling; global max pooling as amax over H, W.

    nn.AdaptiveMaxPool2d has no deterministic CUDA backward, so training under deterministic mode raises; timm's
    FastAdaptiveMaxPool (x.amax over H, W: the same values, a deterministic gradient) takes its place.
    """
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveMaxPool

    net.reset_classifier(0, _timm_pool(pool))
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveMaxPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, FastAdaptiveMaxPool(flatten=False))


def build_backbone(spec: WeightsSpec, pool: str = "avg") -> Backbone:
    """A backbone with its pretrained weights loaded from `spec` (classifier removed)."""
    net = load_pretrained(spec) if spec.pretrained else _bare(spec.backbone)
    _reset_head(net, pool)
    mean, std = normalization_for(spec, net)
    return Backbone(net, mean, std, pool)


def _bare(name: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False)
    except Exception as e:
        raise SmallvisionError(f"unknown backbone {name!r}: not a timm architecture (see timm.list_models())") from e


def scratch_backbone(name: str, image_size: int, batch_norm: bool) -> Backbone:
    """A randomly initialised from-scratch CNN (inputs only rescaled to [0, 1], as in the Keras examples)."""
    from smallvision.models.scratch import build_scratch

    return Backbone(build_scratch(name, image_size, batch_norm), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "none")


def bare_backbone(name: str, pool: str, mean, std, options: dict | None = None) -> Backbone:
    """The same architecture without weights, for loading a saved model (weights come from its folder)."""
    from smallvision.models.scratch import SCRATCH

    if name in SCRATCH:
        opts = options or {}
        return scratch_backbone(name, int(opts["image_size"]), bool(opts.get("batch_norm", False)))
    net = _bare(name)
    _reset_head(net, pool)
    return Backbone(net, mean, std, pool)


def _unit(module_name: str) -> str:
    parts = module_name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def block_groups(backbone: Backbone) -> list[tuple[str, list[nn.Module]]]:
    """The backbone's block groups, input to output: [(name, modules)]; the last merges any trailing head conv."""
    from timm.models import group_modules

    net = backbone.net
    grouped = group_modules(net, net.group_matcher(coarse=True))
    modules = dict(net.named_modules())
    groups: list[tuple[str, list[str]]] = []
    for gid in sorted(grouped):
        names = [n for n in grouped[gid] if n in modules and any(True for _ in modules[n].parameters())]
        if not names:
            continue
        label = "stem" if gid == 0 else "+".join(dict.fromkeys(_unit(n) for n in names))
        if gid >= 99999 and groups:
            groups[-1] = (groups[-1][0] + "+" + label, groups[-1][1] + names)
        else:
            groups.append((label, names))
    return [(label, [modules[n] for n in names]) for label, names in groups]


def freeze(
    backbone: Backbone, trainable_groups: int | None = 0, from_name: str | None = None, bn_eval: bool = True
) -> list[str]:
    """Freeze all but the top `trainable_groups` groups (or every group from `from_name` up); return trainable names.

    Frozen parameters get requires_grad=False and their modules are marked so they stay in eval mode (BatchNorm
    running statistics and dropout frozen too) whenever the model is put in training mode. With `bn_eval` (the
    Keras advice for fine-tuning on small data) every BatchNorm keeps its pretrained running statistics, while the
    scale and shift of unfrozen ones still train.
    """
    groups = block_groups(backbone)
    names = [g for g, _ in groups]
    if from_name is not None:
        starts = [i for i, g in enumerate(names) if g == from_name or g.startswith(from_name + ".")]
        if not starts:
            raise SmallvisionError(f"--unfreeze-from {from_name!r}: no such block; blocks are {', '.join(names)}")
        first = starts[0]
    elif trainable_groups is None:
        first = 0
    else:
        first = max(0, len(groups) - trainable_groups)
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if bn_eval else []
    if from_name is None and trainable_groups is None:
        backbone.requires_grad_(True)
        backbone.frozen_modules = norms
        keep_frozen_in_eval(backbone)
        return names
    backbone.requires_grad_(False)
    for _, mods in groups[first:]:
        for m in mods:
            m.requires_grad_(True)
    if first >= len(groups):
        backbone.frozen_modules = [backbone.net]
    else:
        backbone.frozen_modules = norms + [
            m
            for m in backbone.modules()
            if (own := list(m.parameters(recurse=False))) and not any(p.requires_grad for p in own)
        ]
    keep_frozen_in_eval(backbone)
    return names[first:]


def keep_frozen_in_eval(backbone: Backbone) -> None:
    """Put the frozen modules back in eval mode (called after every .train())."""
    for m in getattr(backbone, "frozen_modules", []):
        m.eval()
