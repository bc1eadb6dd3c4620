"""What each of `auto`'s steps costs on this machine: measured once on warm-up batches, then read from the cache.

The planner reading these figures is pure: a figure this machine has not measured yet raises `MissingFigure`, and
`planned` times it and plans again, so only the figures the planner reaches are ever timed, and a plan is a function
of its inputs and the figures alone.

Every figure is timed at the precision the run trains and extracts features at (the fp32 form's at fp32: val/test
features and the flipped views run in it, as the saved model does); a batch's figure after one untimed warm-up batch
(it pays for allocation, kernel selection and tracing), while a form's build and a stage's fixed part are figures of
their own. The figures are kept per machine (CPU or GPU model, threads,
torch version) in the user cache, so the same data, seed and budget give the same plan on the same machine: a second
run reads the figures the first one measured instead of timing a machine that may be busier now.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from smallvision import atomic
from smallvision.caching.features import FEATURE_FORMAT
from smallvision.data.cache import cache_root, key_of

log = logging.getLogger(__name__)

BATCH = 32  # the recipes' default batch size; a figure timed at another (--batch-size) says so in its key
DECODE_FILES = 24  # JPEG files written and decoded per size to time decoding
# forward passes are short (0.3 s a batch) and vary: lite0 at 260 px timed 84-106 images/s over seven runs of 3 on
# this 2-core machine, so a pass's rate is the median of 5 (a training step's of 3)
PASSES = 5
HEAD_DIM = 1280  # the Lite backbones' feature width, at which a head's training on cached features is timed


def machine() -> dict:
    """What the timings depend on: processor or GPU model, threads, torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": cores,
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
    }


T = TypeVar("T")


class MissingFigure(Exception):
    """A figure the planner read that this machine has not measured yet; `measure` times it."""

    def __init__(self, key: str, measure: Callable[[], dict]) -> None:
        super().__init__(key)
        self.key, self.measure = key, measure


class Costs:
    """Measured seconds of the planned steps' units, cached per machine; `measured` lists what this run timed."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.machine = machine()
        # the figures time the forms features are computed in: a change to those (FEATURE_FORMAT) re-times them
        key = key_of({**self.machine, "precision": precision, "forms": FEATURE_FORMAT})
        self.path = cache_root() / "costs" / f"{key}.json"
        try:
            self.figures: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.figures = {}
        self.measured: list[str] = []  # timed by this run (the rest were read from the cache)
        self.used: list[str] = []  # every figure the plan read, in the order it read them

    def _get(self, key: str, measure: Callable[[], dict]) -> dict:
        if key not in self.figures:
            raise MissingFigure(key, measure)
        if key not in self.used:
            self.used.append(key)
        return self.figures[key]

    def measure(self, missing: MissingFigure) -> None:
        """Time the figure the planner found missing and keep it, here and in the machine's cache; the run's random
        state is left as it was (timing builds networks and draws batches: a first run, which times, and a rerun,
        which reads the figures, then train the same models)."""
        import torch

        began = time.perf_counter()
        with torch.random.fork_rng():
            values = missing.measure()
        values["measure_seconds"] = time.perf_counter() - began  # what timing it took: `timing_seconds` reads it
        self.figures[missing.key] = {k: float(f"{v:.3g}") for k, v in values.items()}
        self.measured.append(missing.key)
        try:
            atomic.write_json(self.path, self.figures)
        except OSError as e:  # a read-only cache only costs the next run its measuring time
            log.debug("could not record step costs in %s: %s", self.path, e)

    def features(self, spec, size: int) -> float:
        """Images per second through `spec`'s backbone at `size` in the feature pass's fast form."""

        def measure() -> dict:
            import torch

            from smallvision.caching.features import feature_form, feature_precision
            from smallvision.models.backbone import build_backbone

            backbone = build_backbone(spec, "avg")
            form = feature_form(backbone, size, BATCH, self.precision)
            x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
            return {"images_per_second": BATCH / _timed(lambda: form(x), feature_precision(self.precision), PASSES)}

        return self._get(f"features/{spec.backbone}/{size}", measure)["images_per_second"]

    def finetune(self, spec, size: int, blocks: int, batch: int = BATCH) -> dict:
        """Fine-tuning the top `blocks` groups on cached activations: seconds per training and validation batch of
        `batch` images (caching them is `bottom`'s)."""

        def measure() -> dict:
            model, views = _top_views(spec, size, blocks, batch)
            if views is None:  # trained on images: every step runs the whole network
                return _train_step(model, size, self.precision, batch=batch)
            return _train_step(views.model, size, self.precision, views, batch)

        return self._get(f"finetune/{spec.backbone}/{size}/{blocks}{_at(batch)}", measure)

    def bottom(self, spec, size: int) -> dict:
        """The form caching/activations.py `compute_views` runs the frozen part in: its build seconds and images/s in
        the views' arithmetic (`view_precision`). Timed below the top block and read for every round: more blocks
        leave a smaller frozen part (lite2's below two blocks: 88 images/s against 81 below one; lite0's 101 against
        96), so deeper rounds are costed a little high; the whole backbone's rate would not do (it runs the blocks
        the round trains too)."""

        def measure() -> dict:
            import torch

            from smallvision.caching.activations import view_precision
            from smallvision.models.inference import inference_form

            split = _top_split(spec, size, 1)[1]
            if split is None:
                raise ValueError(f"{spec.backbone} has no cacheable boundary below its top block: nothing is cached")
            precision = view_precision(self.precision)
            t0 = time.perf_counter()
            form = inference_form(split.bottom(), (3, size, size), BATCH, precision)
            build = time.perf_counter() - t0
            x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
            arithmetic = f"cuda-{precision}" if torch.cuda.is_available() else precision
            rate = BATCH / _timed(lambda: form(x), arithmetic, PASSES)
            return {"bottom_build_seconds": build, "bottom_images_per_second": rate}

        return self._get(f"bottom/{spec.backbone}/{size}", measure)

    def network_stage(self) -> float:
        """Seconds an end-to-end stage costs beyond its batches: the trainer, its callbacks and checkpoint, the first
        step's allocations (measured: 1.9 s of a 6-epoch lite0 round on hymenoptera whose batches took 2.5 s). The
        machine's, not a network's: timed once on one epoch of one batch of a small from-scratch CNN, Lightning
        imported first (a run pays that once, not every stage)."""

        def measure() -> dict:
            import tempfile
            from pathlib import Path

            import lightning.pytorch  # noqa: F401  imported before the clock: once per process, not per stage

            from smallvision.engine.stage import ImageData, StageSpec
            from smallvision.engine.trainer import fit
            from smallvision.models.backbone import scratch_backbone
            from smallvision.models.head import Head, ImageClassifier

            size = 64
            backbone = scratch_backbone("small_cnn", size, True)
            model = ImageClassifier([backbone], Head(backbone.net.num_features, 2))
            step = _train_step(model, size, self.precision)
            x, y = np.zeros((BATCH, size, size, 3), np.uint8), np.arange(BATCH) % 2
            stage = StageSpec("cost", epochs=1, lr=1e-4, batch_size=BATCH, precision=self.precision)
            groups = [{"params": list(model.parameters()), "lr": 1e-4}]
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                data = ImageData({"train": (x, y), "val": (x, y)})
                fit(model, data, stage, groups=groups, stage_dir=Path(d), progress=False)
                seconds = time.perf_counter() - t0
            return {"stage_seconds": max(0.0, seconds - step["step_seconds"] - step["val_batch_seconds"])}

        return self._get("stage/network", measure)["stage_seconds"]

    def augment(self, augment, size: int) -> float:
        """Seconds to augment one training image at `size` on the CPU, as the activation cache makes each view (one
        image at a time, before the frozen part runs)."""

        def measure() -> dict:
            import torch

            from smallvision.data.transforms import train_transform

            transform = train_transform(augment, size)
            images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8)
            t0 = time.perf_counter()
            for img in images:
                transform(img)
            return {"seconds_per_image": (time.perf_counter() - t0) / BATCH}

        return self._get(f"augment/{key_of(augment.model_dump())}/{size}", measure)["seconds_per_image"]

    def finetune_images(self, spec, size: int, blocks: int, batch: int = BATCH) -> dict:
        """Fine-tuning the top `blocks` groups on full images (no activation cache: it is off or over
        --memory-budget): seconds per training and validation batch, every step running the whole network."""

        def measure() -> dict:
            return _train_step(_top_split(spec, size, blocks)[0], size, self.precision, batch=batch)

        return self._get(f"finetune-images/{spec.backbone}/{size}/{blocks}{_at(batch)}", measure)

    def fp32_form(self, spec, size: int) -> dict:
        """`spec`'s fp32 inference form, as val/test features and the flipped views run it: seconds to build it
        (traced, frozen and checked on a CPU) and its images per second."""

        def measure() -> dict:
            import torch

            from smallvision.models.backbone import build_backbone
            from smallvision.models.inference import inference_form

            backbone = build_backbone(spec, "avg")
            t0 = time.perf_counter()
            form = inference_form(backbone, (3, size, size), BATCH, "fp32")
            build = time.perf_counter() - t0
            x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
            arithmetic = "cuda-fp32" if torch.cuda.is_available() else "fp32"
            return {"build_seconds": build, "images_per_second": BATCH / _timed(lambda: form(x), arithmetic, PASSES)}

        return self._get(f"fp32/{spec.backbone}/{size}", measure)

    def activations(self, spec, size: int, blocks: int) -> int:
        """Values per image at the boundary below the top `blocks` groups (what the activation cache stores per view;
        0 when the network has no such boundary and fine-tunes on images)."""

        def measure() -> dict:
            from smallvision.caching.activations import boundary_values

            split = _top_split(spec, size, blocks)[1]
            return {"values_per_image": boundary_values(split, size) if split is not None else 0}

        return int(self._get(f"activations/{spec.backbone}/{size}/{blocks}", measure)["values_per_image"])

    def scratch(self, name: str, size: int, batch_norm: bool, batch: int = BATCH) -> dict:
        """Seconds per training batch and per validation batch (of `batch` images) of a from-scratch CNN at `size`."""

        def measure() -> dict:
            from smallvision.models.backbone import scratch_backbone
            from smallvision.models.head import Head, ImageClassifier

            backbone = scratch_backbone(name, size, batch_norm)
            model = ImageClassifier(
                [backbone], Head(backbone.net.num_features, 2, 0.5, 512 if name == "small_cnn" else 0)
            )
            return _train_step(model, size, self.precision, batch=batch)

        return self._get(f"scratch/{name}/{size}/{int(batch_norm)}{_at(batch)}", measure)

    def head(
        self,
        classes: int,
        multi: bool,
        batch: int = BATCH,
        loss: str | None = None,
        dropout: float = 0.0,
        hidden: int = 0,
    ) -> dict:
        """A dense head's training on cached features (the tensor loop, as auto's heads train), with a multi-label
        folder's `loss` (bce or asl: timm's asymmetric loss took 1.15x BCE's time at posters_ml's shape, 23 labels;
        None, a single-label one's cross-entropy) and the run's `dropout` and `hidden` layer (dropout 0.5 before a
        1280-wide head took 2.7-3x the time of none: 3.2-3.7 s against 1.2 s for 30 epochs of 4,899 samples): seconds
        per stage, per epoch (its metric and validation pass: mAP is over the epoch) and per sample-epoch, fitted from
        runs of 128 samples for 2 and 6 epochs and of 1024 for 2 (a quarter as many validation samples)."""

        def measure() -> dict:
            import torch

            from smallvision.engine.stage import StageSpec, Tensors
            from smallvision.engine.trainer import fit
            from smallvision.models.head import Head
            from smallvision.task import MULTI_LABEL, SINGLE_LABEL

            rng = np.random.default_rng(0)

            def run(n: int, epochs: int) -> float:
                x = rng.standard_normal((n, HEAD_DIM)).astype(np.float32)
                y = (rng.random((n, classes)) < 0.2).astype(np.float32) if multi else rng.integers(0, classes, n)
                data = Tensors((x, y), (x[: n // 4], y[: n // 4]))
                spec = StageSpec("cost", epochs=epochs, lr=1e-3, batch_size=batch, multilabel_loss=loss or "bce")
                t0 = time.perf_counter()
                head = Head(HEAD_DIM, classes, dropout, hidden)
                fit(head, data, spec, MULTI_LABEL if multi else SINGLE_LABEL, progress=False)
                return time.perf_counter() - t0

            with torch.random.fork_rng():  # timing leaves the run's random state as it found it
                run(128, 2)  # warm-up
                small, long, big = run(128, 2), run(128, 6), run(1024, 2)
            per = max(0.0, (big - small) / ((1024 - 128) * 1.25 * 2))
            epoch = max(0.0, (long - small) / 4 - per * 128 * 1.25)
            stage = max(1e-3, small - 2 * (epoch + per * 128 * 1.25))
            return {"stage_seconds": stage, "epoch_seconds": epoch, "sample_epoch_seconds": per}

        layers = (f"/d{dropout:g}" if dropout else "") + (f"/h{hidden}" if hidden else "")  # none: the keys before
        return self._get(f"head/{classes}/{int(multi)}/{loss or 'ce'}{_at(batch)}{layers}", measure)

    def decode(self) -> dict:
        """Wall seconds per image to decode, resize and cache JPEG files as the runs do (the thread pool included):
        a fixed part per file and a part per megapixel, fitted from a 150 px and a 640x480 batch."""

        def measure() -> dict:
            import tempfile
            from pathlib import Path
            from unittest import mock

            from PIL import Image

            from smallvision.data.cache import decoded_images
            from smallvision.data.decode import content_digest

            rng = np.random.default_rng(0)
            seconds = {}
            with (
                tempfile.TemporaryDirectory(prefix="smallvision-costs-") as tmp,
                mock.patch.dict(os.environ, {"SMALLVISION_CACHE_DIR": str(Path(tmp) / "cache")}),  # a throwaway store
            ):
                for w, h in ((150, 150), (640, 480)):
                    paths = []
                    for i in range(DECODE_FILES):
                        path = Path(tmp) / f"{w}-{i}.jpg"
                        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
                        paths.append(path)
                    digests = [content_digest(p.read_bytes()) for p in paths]  # the cache checks the bytes it decodes
                    t0 = time.perf_counter()
                    decoded_images(paths, digests, 224, progress=False)
                    seconds[w * h / 1e6] = (time.perf_counter() - t0) / DECODE_FILES
            (small, t_small), (big, t_big) = sorted(seconds.items())
            per_mpix = max(0.0, (t_big - t_small) / (big - small))
            return {"seconds_per_image": max(1e-5, t_small - per_mpix * small), "seconds_per_megapixel": per_mpix}

        return self._get("decode/files", measure)


def planned(make: Callable[[Costs], T], costs: Costs) -> T:
    """`make(costs)`, a pure planner, called until every figure it reads is known: each missing one is timed when
    the planner first reaches it (a rung dropped before its rounds are costed never has them timed)."""
    while True:
        try:
            return make(costs)
        except MissingFigure as missing:
            costs.measure(missing)


class _StandIn(Costs):
    """`costs` answering a figure this machine has not measured for `backbone` with `like`'s same figure, noting
    in `timing` what measuring that took: what `backbone`'s figures will cost to time, before they are timed."""

    def __init__(self, costs: Costs, backbone: str, like: str) -> None:
        vars(self).update(vars(costs))  # its figures, read and never added to: nothing is timed
        self.measured, self.used = [], []
        self.backbone, self.like, self.timing = backbone, like, {}

    def _get(self, key: str, measure: Callable[[], dict]) -> dict:
        stand_in = self.figures.get(key.replace(f"/{self.backbone}/", f"/{self.like}/"), {})
        if key in self.figures or "measure_seconds" not in stand_in:
            return super()._get(key, measure)
        self.timing[key] = stand_in["measure_seconds"]
        return stand_in


def timing_seconds(make: Callable[[Costs], object], costs: Costs, backbone: str, like: str) -> float | None:
    """Seconds `planned(make, costs)` will spend timing the figures it reads that this machine has not measured for
    `backbone`, each at what timing `like`'s same figure took (its values stand in too, so a choice they steer, such
    as whether a round's activations fit the memory budget, is `like`'s); None when a missing figure has no such
    stand-in (another kind of figure, or one cached before figures were clocked). Times nothing."""
    stand_in = _StandIn(costs, backbone, like)
    try:
        make(stand_in)
    except MissingFigure:
        return None
    return sum(stand_in.timing.values())


def _at(batch: int) -> str:
    """A figure's key suffix for its batch: none at BATCH (the keys figures cached before had), else /bN."""
    return "" if batch == BATCH else f"/b{batch}"


def _timed(step: Callable[[], object], arithmetic: str, timed: int = 3) -> float:
    """Median seconds of `timed` calls of `step` after one untimed warm-up call (synchronised on a GPU)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() and "cuda" in arithmetic else (lambda: None)
    seconds = []
    with torch.inference_mode():
        step()
        sync()
        for _ in range(timed):
            t0 = time.perf_counter()
            step()
            sync()
            seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds))


def _top_split(spec, size: int, blocks: int) -> tuple:
    """`spec` under a two-class head with all but its top `blocks` groups frozen, and where its frozen part ends
    (None when it has no cacheable boundary)."""
    from smallvision.caching.activations import boundary_split
    from smallvision.models.backbone import build_backbone, freeze
    from smallvision.models.head import Head, ImageClassifier

    backbone = build_backbone(spec, "avg")
    model = ImageClassifier([backbone], Head(backbone.feature_dim(size), 2))
    freeze(backbone, blocks)
    return model, boundary_split(model, size)[0]


def _top_views(spec, size: int, blocks: int, batch: int) -> tuple:
    """`_top_split`'s model and one random batch's cached activations below its boundary (None without one)."""
    import torch

    from smallvision.caching.activations import ActivationViews

    model, split = _top_split(spec, size, blocks)
    if split is None:
        return model, None
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        acts = split.bottom().eval()(x)
    labels = np.arange(batch) % 2
    views = ActivationViews(split, acts[None].clone(), {"train": labels, "val": labels}, {"val": acts.clone()}, False)
    return model, views


def _train_step(model, size: int, precision: str, views=None, batch: int = BATCH) -> dict:
    """Seconds per training and validation batch of `batch` images, timed as the recipes' estimate times them."""
    from smallvision.config import build_config
    from smallvision.engine.timing import estimate_stage_seconds

    rng = np.random.default_rng(0)
    data = {
        s: (rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8), np.arange(batch) % 2)
        for s in ("train", "val")
    }
    cfg = build_config(
        {
            "data": {"path": ".", "image_size": size},
            "recipe": {"name": "finetune", "batch_size": batch},
            "trainer": {"precision": precision},
        }
    )
    est = estimate_stage_seconds(model, data, cfg, views, warmup=1, timed=3)
    return {"step_seconds": est["step_seconds"], "val_batch_seconds": est["val_batch_seconds"]}
