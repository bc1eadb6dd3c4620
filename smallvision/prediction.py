"""Classify images and folders with a saved model, or with the bundled backbone's original ImageNet head."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallvision.data.decode import ImageDecodeError, decode_file, is_image_name
from smallvision.errors import SmallvisionError

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The top-k classes for one image, most probable first (or the reason it could not be read)."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        """Plain values for JSON output."""
        out: dict = {"path": self.path}
        if self.error:
            out["error"] = self.error
        else:
            out["top"] = [{"class": c, "probability": round(p, 6)} for c, p in self.top]
        return out


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, plus every image under named folders (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and is_image_name(q))
        elif p.exists():
            out.append(p)
        else:
            raise SmallvisionError(f"{p}: no such file or folder")
    if not out:
        raise SmallvisionError(f"no image files found in {', '.join(map(str, paths))}")
    return out


def _views(x, tta: bool) -> list:
    """The input batch, plus (with TTA) its mirror image and a 90% centre crop of both, resized back."""
    if not tta:
        return [x]
    import torch.nn.functional as F

    size = x.shape[-1]
    m = max(1, int(round(size * 0.05)))
    crop = F.interpolate(x[..., m : size - m, m : size - m], size=(size, size), mode="bilinear", antialias=True)
    return [x, x.flip(-1), crop, crop.flip(-1)]


def probabilities(model, images: np.ndarray, *, tta: bool = False, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for uint8 NHWC images; with `tta`, averaged over flipped and cropped views."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            x = x.float().div_(255)
            views = _views(x, tta)
            p = sum(model(v.contiguous(memory_format=torch.channels_last)).float().softmax(1) for v in views)
            out.append((p / len(views)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def classify(
    model,
    classes: Sequence[str],
    image_size: int,
    paths: Sequence[Path],
    top_k: int = 5,
    batch_size: int = 32,
    tta: bool = False,
) -> list[Prediction]:
    """Run `model` ([0, 1] RGB input) over image files in batches; unreadable files get an error, not a crash."""
    import torch

    k = max(1, min(top_k, len(classes)))
    preds: list[Prediction] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        probs = torch.from_numpy(probabilities(model, np.stack([a for _, a in pending]), tta=tta))
        values, indices = probs.topk(k, dim=1)
        for (slot, _), v, i in zip(pending, values.tolist(), indices.tolist(), strict=True):
            preds[slot].top = [(classes[c], float(p)) for c, p in zip(i, v, strict=True)]
        pending.clear()

    model.eval()
    for path in paths:
        preds.append(Prediction(str(path)))
        try:
            pending.append((len(preds) - 1, decode_file(path, image_size)))
        except ImageDecodeError as e:
            preds[-1].error = str(e)
            log.warning("skipped %s", e)
        if len(pending) >= batch_size:
            flush()
    flush()
    return preds


def imagenet_model(backbone: str = "efficientnet_lite0", weights: str | None = None):
    """The pretrained backbone with its original 1000-class head, normalization included, and the class names."""
    from timm.data import ImageNetInfo
    from torch import nn

    from smallvision.models.backbone import Backbone
    from smallvision.models.weights import load_pretrained, normalization_for, resolve_weights

    spec = resolve_weights(backbone, weights)
    if not spec.pretrained:
        raise SmallvisionError("ImageNet predictions need pretrained weights; drop --weights random")
    net = load_pretrained(spec, keep_classifier=True)
    if net.num_classes != 1000:
        raise SmallvisionError(f"{backbone} from {spec.detail} has no 1000-class ImageNet head")
    mean, std = normalization_for(spec, net)
    wrapped = Backbone(net, mean, std, "avg")
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    size = int(net.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    return nn.Sequential(wrapped).eval(), names, size
