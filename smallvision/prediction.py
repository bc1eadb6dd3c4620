"""Classify images and folders with a saved model, or with the bundled backbone's original ImageNet head."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallvision.data.decode import ImageDecodeError, decode_file, is_image_name
from smallvision.errors import SmallvisionError
from smallvision.task import MULTI_LABEL, SINGLE_LABEL

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The top-k classes for one image, most probable first (or the reason it could not be read); for a multi-label
    model also the labels at or above their thresholds and every label's probability."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    folder: bool = False  # the row stands for a folder that could not be listed (its images were skipped)
    labels: list[tuple[str, float]] | None = None  # multi-label: the predicted labels, most probable first
    scores: dict[str, float] | None = None  # multi-label: every label's probability

    def to_dict(self) -> dict:
        """Plain values for JSON output."""
        out: dict = {"path": self.path}
        if self.error:
            out["error"] = self.error
        elif self.labels is not None:
            out["labels"] = [{"label": c, "probability": round(p, 6)} for c, p in self.labels]
            out["probabilities"] = {c: round(p, 6) for c, p in (self.scores or {}).items()}
        else:
            out["top"] = [{"class": c, "probability": round(p, 6)} for c, p in self.top]
        return out


@dataclass(frozen=True)
class UnlistedFolder:
    """A folder that could not be listed (no permission, vanished, path too long): reported, its images skipped."""

    path: Path
    reason: str


def _walk(folder: Path) -> Iterator[Path | UnlistedFolder]:
    """Image files under `folder` in sorted path order, listing one folder at a time (what sorted(rglob) gives).

    A folder that cannot be listed is yielded as an UnlistedFolder, so the caller reports it and goes on.
    """
    try:
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
    except OSError as e:
        yield UnlistedFolder(folder, e.strerror or str(e))
        return
    for entry in ordered:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file() and is_image_name(Path(entry.name)):
            yield Path(entry.path)


def iter_image_files(paths: Iterable[str | Path]) -> Iterator[Path | UnlistedFolder]:
    """Image files named directly, plus every image under named folders (sorted), listed lazily; a folder that
    cannot be listed comes as an UnlistedFolder in its place."""
    named = [Path(p) for p in paths]
    for p in named:
        if not p.exists():
            raise SmallvisionError(f"{p}: no such file or folder")
    return itertools.chain.from_iterable(_walk(p) if p.is_dir() else (p,) for p in named)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, plus every image under named folders (sorted), as a list (unlisted folders are
    logged and skipped)."""
    paths = list(paths)
    out = []
    for item in iter_image_files(paths):
        if isinstance(item, UnlistedFolder):
            log.warning("skipped folder %s: cannot list it (%s)", item.path, item.reason)
        else:
            out.append(item)
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
    """Class probabilities for uint8 NHWC images; with `tta`, averaged over flipped and cropped views.

    A model that flips itself (ImageClassifier tta "hflip") runs its views unflipped under `tta`: the views hold
    the mirror images already, so the result is the same and each view runs once.
    """
    import torch

    model.eval()
    own = getattr(model, "tta", None)
    out = []
    try:
        if tta and own:
            model.tta = None
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
                x = x.float().div_(255)
                views = _views(x, tta)
                p = sum(
                    model.task.probabilities(model(v.contiguous(memory_format=torch.channels_last)).float())
                    for v in views
                )
                out.append((p / len(views)).numpy())
    finally:
        if own:
            model.tta = own
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _decode_batch(
    paths: list[Path | UnlistedFolder], image_size: int
) -> tuple[list[Prediction], list[int], np.ndarray]:
    """Decode one batch of files: their predictions (errors filled in), the readable ones' slots and pixels."""
    preds, slots, images = [], [], []
    for path in paths:
        if isinstance(path, UnlistedFolder):
            error = f"folder could not be listed ({path.reason}); its images were skipped"
            preds.append(Prediction(str(path.path), error=error, folder=True))
            log.warning("skipped folder %s: %s", path.path, error)
            continue
        preds.append(Prediction(str(path)))
        try:
            images.append(decode_file(path, image_size))
            slots.append(len(preds) - 1)
        except ImageDecodeError as e:
            preds[-1].error = str(e).removeprefix(f"{path}: ")  # the row already names the file
            log.warning("skipped %s", e)
    pixels = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return preds, slots, pixels


def _decoded_batches(files: Iterator[Path], image_size: int, batch_size: int, prefetch: bool):
    """Decoded batches in file order; with `prefetch`, the next batch decodes in a thread while this one is used."""
    chunks = iter(lambda: list(itertools.islice(files, batch_size)), [])
    if not prefetch:
        yield from (_decode_batch(chunk, image_size) for chunk in chunks)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="smallvision-decode")
    try:
        pending = None
        for chunk in chunks:
            ahead = pool.submit(_decode_batch, chunk, image_size)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Predictions:
    """Top-k predictions for image files, computed batch by batch as they are iterated, in bounded memory.

    `probabilities` maps uint8 NHWC images to float32 [N, classes] probabilities (a PyTorch model or an ONNX export);
    `len()` is the number of image files (counted up front, paths only, for progress bars).
    """

    def __init__(
        self,
        probabilities: Callable[[np.ndarray], np.ndarray],
        classes: Sequence[str],
        image_size: int,
        paths: Iterable[str | Path],
        top_k: int = 5,
        batch_size: int = 32,
        prefetch: bool = True,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        if top_k < 1:
            raise SmallvisionError(f"top_k (--top-k) = {top_k}: give 1 or more classes per image")
        self.classes = list(classes)
        self.k = min(top_k, len(self.classes))
        self.image_size = image_size
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.float32)
        self._probabilities = probabilities
        self._paths = [Path(p) for p in paths]
        self._batch_size = batch_size
        self._prefetch = prefetch
        self._count = sum(1 for _ in iter_image_files(self._paths))
        if not self._count:
            raise SmallvisionError(f"no image files found in {', '.join(map(str, self._paths))}")

    def __len__(self) -> int:
        return self._count

    def batches(self) -> Iterator[list[Prediction]]:
        """One list of predictions per decoded batch, yielded as soon as it is classified."""
        files = iter_image_files(self._paths)
        for preds, slots, pixels in _decoded_batches(files, self.image_size, self._batch_size, self._prefetch):
            if slots:
                probs = np.asarray(self._probabilities(pixels), dtype=np.float32)
                top = np.argsort(-probs, axis=1, kind="stable")[:, : self.k]
                for slot, row, order in zip(slots, probs, top, strict=True):
                    preds[slot].top = [(self.classes[c], float(row[c])) for c in order]
                    if self.thresholds is not None:
                        self._label(preds[slot], row)
            yield preds

    def _label(self, pred: Prediction, row: np.ndarray) -> None:
        """A multi-label prediction's label set (each label at or above its threshold) and every probability."""
        above = [j for j in np.argsort(-row, kind="stable") if MULTI_LABEL.decide(row[j], self.thresholds[j])]
        pred.labels = [(self.classes[j], float(row[j])) for j in above]
        pred.scores = {name: float(v) for name, v in zip(self.classes, row, strict=True)}

    def __iter__(self) -> Iterator[Prediction]:
        return itertools.chain.from_iterable(self.batches())


def label_thresholds(classes: list[str], saved: list[float] | None, override: float | str | Path | None):
    """The thresholds a multi-label model predicts with: its own (chosen on validation), one number for every label,
    or a file of per-label ones (CSV `label,threshold` rows, or a JSON object); None for a single-label model, which
    refuses an override."""
    if saved is None:
        if override is not None:
            raise SmallvisionError(
                "--threshold applies to multi-label models; this one predicts one class per image (its most probable)"
            )
        return None
    if override is None:
        return list(saved)
    if isinstance(override, int | float):
        if not 0 < override < 1:
            raise SmallvisionError(f"--threshold {override}: give a probability between 0 and 1, or a file")
        return [float(override)] * len(classes)
    return _thresholds_file(Path(override), classes, saved)


def _thresholds_file(path: Path, classes: list[str], saved: list[float]) -> list[float]:
    """Per-label thresholds from a file; labels it leaves out keep the model's own, unknown labels are refused."""
    import csv
    import json

    try:
        text = path.read_text(encoding="utf-8")
        given = (
            json.loads(text)
            if path.suffix.lower() == ".json"
            else {
                row[0].strip(): row[1] for row in csv.reader(text.splitlines()) if len(row) >= 2 and row[0] != "label"
            }
        )
        values = {name: float(v) for name, v in given.items()}
    except (OSError, ValueError, AttributeError) as e:
        raise SmallvisionError(
            f"{path}: cannot read per-label thresholds ({e}); write CSV rows label,threshold or a JSON object"
        ) from e
    unknown = [n for n in values if n not in classes]
    bad = [n for n, v in values.items() if not 0 < v < 1]
    if unknown or bad:
        what = f"label(s) the model does not have: {', '.join(unknown)}" if unknown else f"not in (0, 1): {bad}"
        raise SmallvisionError(f"{path}: {what}; the model's labels are {', '.join(classes)}")
    return [values.get(name, t) for name, t in zip(classes, saved, strict=True)]


def model_probabilities(model, tta: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The probability function of a PyTorch model ([0, 1] RGB input) for `Predictions`."""
    model.eval()
    return lambda images: probabilities(model, images, tta=tta)


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
    model = nn.Sequential(wrapped).eval()
    model.task = SINGLE_LABEL  # ImageNet's 1000 classes, one per image: softmax
    return model, names, size
