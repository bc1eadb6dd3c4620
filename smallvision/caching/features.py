"""Backbone features computed once per image and cached on disk, keyed by content and every setting they depend on
(a head trains on them with engine/loop.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from smallvision.data.cache import Failures, ShardedStore, cache_root, decoded_images, fill_store, key_of
from smallvision.data.decode import RESIZE_POLICY
from smallvision.data.index import ImageItem
from smallvision.models.weights import WeightsSpec

log = logging.getLogger(__name__)

# bumped when the forms features are computed in change, so neither cached features nor the step costs timed on
# those forms (auto/costs.py) outlive them: 2, lite2's bf16 pass at 260 px runs traced (models/inference.py), 1.4-1.5x
# the BatchNorm-folded form's rate and not its last bits
FEATURE_FORMAT = 2


def feature_settings(
    spec: WeightsSpec, image_size: int, pool: str, precision: str = "auto", split: int | None = None
) -> dict:
    """Everything a cached feature depends on besides the image's content (`precision`: a trainer precision; `split`:
    computed split below the top `split` block groups, caching/taps.py, whose last bits can differ from the whole
    network's in bf16: lite2 at 260 px, lite0 at 64, so they are cached apart)."""
    return {
        **({"split_below_top": split} if split is not None else {}),
        "backbone": spec.backbone,
        "weights": spec.fingerprint,
        "normalization": [spec.mean, spec.std] if spec.mean else f"timm {version('timm')} default",
        "image_size": image_size,
        "resize": RESIZE_POLICY,
        "pool": pool,
        "precision": feature_precision(precision),
        "format": FEATURE_FORMAT,
    }


def feature_store(
    spec: WeightsSpec, image_size: int, pool: str, precision: str = "auto", split: int | None = None
) -> ShardedStore:
    """The on-disk feature cache for one backbone + weights + preprocessing + arithmetic (+ split, see
    feature_settings)."""
    settings = feature_settings(spec, image_size, pool, precision, split)
    return ShardedStore(cache_root() / "features" / f"{spec.backbone}-{key_of(settings)}", settings)


def feature_form(backbone, image_size: int, batch_size: int = 32, precision: str = "auto"):
    """The backbone's fast inference form (see models/inference.py) at the asked trainer precision."""
    from smallvision.models.inference import inference_form

    arithmetic = feature_precision(precision).removeprefix("cuda-")
    form = inference_form(backbone, (3, image_size, image_size), batch_size, arithmetic)
    log.info("feature path: %s", ", ".join(form.steps))
    return form


def run_backbone(
    backbone, images: np.ndarray, batch_size: int = 32, progress: bool = True, precision: str = "auto"
) -> np.ndarray:
    """Features for uint8 NHWC images, from the backbone's fast inference form."""
    from smallvision.models.inference import run_batches

    if not len(images):
        return np.zeros((0, 0), np.float32)
    return run_batches(feature_form(backbone, images.shape[1], batch_size, precision), images, progress=progress)


def _prepare(
    spec: WeightsSpec, pool: str, image_size: int, batch_size: int, precision: str, built=None, split=None
) -> tuple[object, object, object]:
    """Build a backbone (unless given) and its inference form, or with `split` (backbone -> a tap's forms, or None
    without a boundary) the split pass's forms instead; run in a thread while images decode."""
    from smallvision.models.backbone import build_backbone

    backbone = built if built is not None else build_backbone(spec, pool)
    backbone.check_size(image_size, spec.backbone)
    forms = split(backbone) if split is not None else None
    return backbone, None if forms else feature_form(backbone, image_size, batch_size, precision), forms


# trainer precision -> the arithmetic of the feature pass ("auto": fp16 on a GPU, bf16 on a CPU that has it natively)
_ARITHMETIC = {"32-true": "fp32", "bf16-mixed": "bf16", "16-mixed": "fp16"}


def feature_precision(precision: str = "auto") -> str:
    """The arithmetic features are computed in for a trainer `precision`: part of the cache key (bf16 features differ
    slightly from fp32 ones). fp16 runs only on a GPU: asked for on a CPU it is an error, never a quiet fp32."""
    import torch

    from smallvision.errors import SmallvisionError
    from smallvision.models.inference import cpu_precision

    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "cuda-fp16" if cuda else cpu_precision()
    if precision not in _ARITHMETIC:
        raise ValueError(f"unknown precision {precision!r}")
    arithmetic = _ARITHMETIC[precision]
    if cuda:
        return f"cuda-{arithmetic}"
    if arithmetic == "fp16":
        raise SmallvisionError(
            "--precision 16-mixed: fp16 features need a GPU and none is available; use bf16-mixed or 32-true"
        )
    return arithmetic


@dataclass
class CachedFeatures:
    """Features aligned with `items`; items that could not be used appear in `failures` (digest -> reason)."""

    items: list[ImageItem]
    features: np.ndarray
    failures: dict[str, str]
    computed: int
    unique: int
    built: dict[str, object]


def _miss_computer(
    spec: WeightsSpec, state: dict, files: tuple, given: dict, settings: tuple, progress: bool, tap=None
):
    """fill_store's `compute` for one backbone: decode the missing images while the backbone builds (once, into
    `state`), then run it on them; unreadable images come back as failures. With a `tap` (caching/taps.py, one that
    wants this pass), the backbone runs split at the tap's boundary and the tap keeps the activations there: the
    split's forms are built instead of the whole network's (which only a backbone without that boundary needs)."""
    from concurrent.futures import ThreadPoolExecutor

    from smallvision.models.inference import run_batches

    paths, digests = files
    pool, image_size, batch_size, precision = settings
    arithmetic = feature_precision(precision).removeprefix("cuda-")

    def split(backbone):
        return tap.forms(spec.backbone, backbone, image_size, batch_size, arithmetic)

    def compute(positions: list[int]) -> tuple[np.ndarray, dict[int, str]]:
        with ThreadPoolExecutor(1) as background:
            building = None
            if "form" not in state:
                log.info("building backbone %s (%s) for uncached images", spec.backbone, spec.detail)
                prebuilt = given.get(spec.fingerprint + spec.backbone)
                building = background.submit(
                    _prepare, spec, pool, image_size, batch_size, precision, prebuilt, split if tap else None
                )
            images, failed = decoded_images(
                [paths[p] for p in positions], [digests[p] for p in positions], image_size, progress=progress
            )
            if building is not None:
                state["backbone"], state["form"], state["split"] = building.result()
        if not len(images):
            feats = np.zeros((0, 0))
        elif state["split"] is not None:
            kept = [digests[p] for i, p in enumerate(positions) if i not in failed]
            feats = tap.features(state["split"], spec.backbone, arithmetic, images, kept, progress)
        else:
            feats = run_batches(state["form"], images, progress=progress)
        reasons = {positions[i]: reason for i, reason in failed.items()}
        return feats, Failures(reasons, transient=[positions[i] for i in failed.transient])

    return compute


def cached_features(
    items: Sequence[ImageItem],
    specs: Sequence[WeightsSpec],
    image_size: int,
    pool: str,
    *,
    precision: str = "auto",
    batch_size: int = 32,
    progress: bool = True,
    built: dict[str, object] | None = None,
    tap=None,
) -> CachedFeatures:
    """Features for every item, joined across backbones; the backbones are built only for cache misses (a `tap`,
    caching/taps.py, keeps the activations of a fine-tuning boundary from those it computes).

    On a miss the backbone is built (timm imported, weights loaded, traced) while the images decode: measured on
    hymenoptera, cold, that overlap saves ~1 s of the ~10 s to the first epoch. (Starting the build earlier, before
    the data check, measured 0.6 s slower: more work contending for the two cores.) `precision` is a trainer
    precision ("32-true": the features a saved model computes); `built` offers backbones built before.
    """
    digests = [it.digest for it in items]
    paths = [it.path for it in items]
    failures: dict[str, str] = {}
    computed = 0
    given = built or {}
    built = {}
    per_backbone = []
    arithmetic = feature_precision(precision).removeprefix("cuda-")
    for spec in specs:
        wanted = tap if tap is not None and tap.wants(spec.backbone, image_size, arithmetic) else None
        store = feature_store(spec, image_size, pool, precision, wanted.blocks if wanted else None)
        state: dict = {}
        compute = _miss_computer(
            spec, state, (paths, digests), given, (pool, image_size, batch_size, precision), progress, wanted
        )
        store.verify(digests)  # a corrupt shard is deleted here, so its rows count as computed below
        before = len(set(store.missing(digests)))
        passing = fill_store(store, digests, compute)
        computed = max(computed, before)
        failures.update({d: r for d in digests if (r := store.failure(d) or passing.get(d)) is not None})
        per_backbone.append(store)
        if "backbone" in state:
            built[spec.fingerprint + spec.backbone] = state["backbone"]

    good = [it for it in items if it.digest not in failures]
    keys = [it.digest for it in good]
    parts = [np.asarray(store.read(keys), dtype=np.float32) for store in per_backbone] if keys else []
    feats = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)
    return CachedFeatures(good, feats, failures, computed, len(set(digests)), built)


def backbone_state(spec: WeightsSpec, pool: str, prefix: str, built=None) -> tuple[dict, tuple, tuple]:
    """The backbone's tensors (names under `prefix`) and normalization, cached so warm runs need no timm."""
    import json

    from safetensors.torch import load_file, save_file

    from smallvision import atomic
    from smallvision.models.backbone import build_backbone

    settings = {**feature_settings(spec, 0, pool, "32-true"), "image_size": None, "precision": None}
    path = cache_root() / "backbones" / f"{spec.backbone}-{key_of(settings)}.safetensors"
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["normalization"])
            state = load_file(str(path))
            return {prefix + k: v for k, v in state.items()}, tuple(meta[0]), tuple(meta[1])
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            log.warning("cached backbone %s unreadable (%s); rebuilding", path, e)
    backbone = built if built is not None else build_backbone(spec, pool)
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    mean = tuple(float(v) for v in backbone.mean.flatten())
    std = tuple(float(v) for v in backbone.std.flatten())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"normalization": json.dumps([mean, std])})
    return {prefix + k: v for k, v in state.items()}, mean, std
