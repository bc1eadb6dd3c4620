"""Classifier heads, and the full classifier: one or more backbones joined, then a head (or an ensemble of heads)."""

from __future__ import annotations

import torch
from torch import nn

from smallvision.errors import SmallvisionError
from smallvision.task import SINGLE_LABEL

TTA = ("hflip",)


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


class EnsembleHead(nn.Module):
    """Several heads, each on the features of its own backbones; outputs the log of their mean probabilities.

    `groups[k]` are the indices (into the model's backbones) whose features member k reads, `dims[i]` backbone i's
    feature width; the joined feature vector is the backbones' features concatenated in order.
    """

    def __init__(self, heads: list[Head], groups: list[list[int]], dims: list[int], task=SINGLE_LABEL) -> None:
        super().__init__()
        self.task = task  # how the members' probabilities are averaged (softmax, or independent sigmoids)
        if len(heads) != len(groups) or not heads:
            raise ValueError(f"an ensemble needs one backbone group per head: {len(heads)} heads, {len(groups)} groups")
        for k, group in enumerate(groups):
            if not group or any(not 0 <= i < len(dims) for i in group):
                raise ValueError(f"member {k} reads backbones {group}, but the model has {len(dims)} backbone(s)")
        self.heads = nn.ModuleList(heads)
        self.groups = [list(g) for g in groups]
        self.dims = list(dims)
        starts = [sum(dims[:i]) for i in range(len(dims))]
        self._slices = [[(starts[i], starts[i] + dims[i]) for i in g] for g in self.groups]

    def member_features(self, features: torch.Tensor, k: int) -> torch.Tensor:
        """The slice of the joined feature vector that member k reads (its backbones' features, in its order)."""
        parts = [features[:, a:b] for a, b in self._slices[k]]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def member_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own logits for a batch of joined feature vectors."""
        return [head(self.member_features(features, k)) for k, head in enumerate(self.heads)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """log(mean of the members' softmax probabilities): softmax of it is the ensemble's probabilities."""
        return self.task.mean_log_probabilities(self.member_logits(features))


class ImageClassifier(nn.Module):
    """Backbones (their pooled features concatenated) followed by a head; input is [0, 1] RGB NCHW.

    With `tta="hflip"`, in eval mode the output is the log of the mean probabilities over the image and its mirror
    image (training never sees it).
    """

    def __init__(self, backbones: list[nn.Module], head: nn.Module, tta: str | None = None, task=SINGLE_LABEL) -> None:
        super().__init__()
        if tta is not None and tta not in TTA:
            raise ValueError(f"tta {tta!r} unknown; use one of {', '.join(TTA)} or None")
        self.backbones = nn.ModuleList(backbones)
        self.head = head
        self.tta = tta
        self.task = task  # what its outputs mean: probabilities, decisions and flip averages ask it

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
        """Logits (log-probabilities for an ensemble or with test-time augmentation) for a batch of images."""
        if self.tta == "hflip" and not self.training:
            return self.task.mean_log_probabilities([self.head(self.features(v).float()) for v in (x, x.flip(-1))])
        return self.head(self.features(x).float())


def _fixed_size(backbone: nn.Module) -> int | None:
    """The one input size a backbone takes (a flattening from-scratch CNN, a ViT), or None when any size runs."""
    net = getattr(backbone, "net", None)
    size = getattr(net, "image_size", None)
    if size is not None:
        return int(size)
    embed = getattr(net, "patch_embed", None)
    fixed = getattr(embed, "img_size", None) if getattr(embed, "strict_img_size", False) else None
    return int(fixed[0]) if fixed is not None else None


def static_feature_dim(backbone: nn.Module) -> int | None:
    """A backbone's feature width when it does not depend on the image size (pooled, or a fixed-size CNN)."""
    net = backbone.net
    if getattr(backbone, "pool", "none") != "none":
        return int(getattr(net, "head_hidden_size", None) or net.num_features)
    if hasattr(net, "image_size"):  # a from-scratch CNN: flattened at its one size, or pooled
        return int(net.num_features)
    return None


def _member_dims(model: ImageClassifier, k: int) -> list[int]:
    """The feature width of each of a member's backbones (one unpooled width found from the head's input)."""
    dims = [static_feature_dim(b) for b in model.backbones]
    in_features = model.head.layers[1].in_features
    unknown = [i for i, d in enumerate(dims) if d is None]
    if len(unknown) > 1:
        raise SmallvisionError(
            f"ensemble member {k} joins {len(unknown)} unpooled backbones, whose feature widths cannot be told apart; "
            "join members with pooled backbones (pool avg or max)"
        )
    if unknown:
        dims[unknown[0]] = in_features - sum(d for d in dims if d is not None)
    if sum(dims) != in_features:
        raise SmallvisionError(
            f"ensemble member {k}: its head reads {in_features} features, its backbones give {sum(dims)}"
        )
    return dims


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Two backbones of one architecture with equal tensors (e.g. the same frozen pretrained network)."""
    if type(a) is not type(b) or type(a.net) is not type(b.net) or a.pool != b.pool:
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def ensemble(models: list[ImageClassifier], tta: str | None = None) -> ImageClassifier:
    """One classifier averaging the members' probabilities; the members' modules are taken over, not copied.

    Each member (an ImageClassifier with a plain Head, one or more backbones) keeps its weights; a backbone equal to
    one already taken (the same frozen pretrained network) is shared, so it runs once per image. Every member is fed
    the same images, so their input sizes must agree.
    """
    if not models:
        raise SmallvisionError("an ensemble needs at least one member model")
    sizes = {}
    for k, m in enumerate(models):
        if not isinstance(m.head, Head):
            raise SmallvisionError(f"ensemble member {k} has a {type(m.head).__name__}; members need a plain Head")
        if m.tta is not None:
            raise SmallvisionError(f"ensemble member {k} carries tta {m.tta!r}; give the ensemble its tta instead")
        for b in m.backbones:
            size = _fixed_size(b)
            if size is not None:
                sizes.setdefault(size, k)
    if len(sizes) > 1:
        found = ", ".join(f"{s} px (member {k})" for s, k in sizes.items())
        raise SmallvisionError(
            f"ensemble members take different input sizes ({found}); they are fed the same images, so train them at "
            "one image size"
        )
    classes = {m.head.layers[-1].out_features for m in models}
    if len(classes) > 1:
        raise SmallvisionError(f"ensemble members predict different numbers of classes ({sorted(classes)})")
    backbones: list[nn.Module] = []
    dims: list[int] = []
    groups: list[list[int]] = []
    for k, m in enumerate(models):
        group = []
        for b, d in zip(m.backbones, _member_dims(m, k), strict=True):
            same = next((i for i, taken in enumerate(backbones) if taken is b or _same_weights(taken, b)), None)
            if same is None:
                backbones.append(b)
                dims.append(d)
                same = len(backbones) - 1
            group.append(same)
        groups.append(group)
    task = models[0].task
    return ImageClassifier(backbones, EnsembleHead([m.head for m in models], groups, dims, task), tta=tta, task=task)
