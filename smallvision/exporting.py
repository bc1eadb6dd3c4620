"""ONNX and TorchScript exports of a saved model, each checked against the PyTorch model before it is reported done.

An export takes uint8 RGB images [N, S, S, 3] (what `smallvision.data.decode` returns) and gives class
probabilities: the pixel scaling, the normalization and the softmax are inside it. It is written to a temporary file,
run on real images beside the PyTorch model, and renamed into place only when every top-1 class agrees and no
probability differs by more than FP32_TOLERANCE; otherwise nothing is left at the destination.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smallvision import atomic, runtime
from smallvision.errors import SmallvisionError
from smallvision.task import METRIC_NAMES, MULTI_LABEL, SINGLE_LABEL, refuse_task_mismatch, task_named

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
PIXEL_SCALE = 255.0  # uint8 -> [0, 1], as smallvision.prediction feeds the network; the check holds exports to it
FP32_TOLERANCE = 1e-4
KEPT_ON_REUSE = ("file", "file_sha256", "size_bytes", "export_seconds", "written_at")  # a kept file's own facts
MAX_CHECK_IMAGES = 1000
MIN_CHECK_IMAGES = 8  # top-1 agreement on one or two images says little about an export
CALIBRATION_IMAGES = 200  # training images int8 ranges are calibrated on (spread over the split)
INT8_TOLERANCE = 1.0  # accuracy points int8 may lose on the val split before it is refused
BATCH = 32


class ExportCheckError(SmallvisionError):
    """An export that disagrees with the PyTorch model it came from; nothing was left at its destination."""


@dataclass
class CheckImages:
    """Real images an export is checked on: uint8 [N, S, S, 3] pixels, where they came from, labels when known."""

    images: np.ndarray
    source: str
    labels: np.ndarray | None = None


class Uint8Classifier(nn.Module):
    """The exported computation: uint8 NHWC RGB in, the task's probabilities out (softmax; a multi-label model's
    sigmoids), around a [0, 1] NCHW network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scale to [0, 1], move channels first, run the network (it normalizes), the task's probabilities."""
        x = images.permute(0, 3, 1, 2).float() / PIXEL_SCALE
        return self.network.task.probabilities(self.network(x).float())


def metadata(card) -> dict[str, str]:
    """The ONNX metadata_props of a model card's export (strings, as ONNX stores them)."""
    summary = {
        "recipe": card.recipe,
        "backbones": [b.name for b in card.backbones],
        "head": card.head.model_dump(),
        "tta": card.tta,
        "task": card.task,
        "thresholds": card.thresholds,  # a multi-label model's per-label thresholds, chosen on validation
        "metrics": card.metrics,
        "versions": card.versions,
    }
    return {
        "smallvision.classes": json.dumps(card.classes),
        "smallvision.image_size": str(card.image_size),
        "smallvision.resize": card.resize,
        "smallvision.card": json.dumps(summary),
        "smallvision.format_version": runtime.METADATA_FORMAT_VERSION,
    }


def _set_metadata(proto, props: dict[str, str]) -> None:
    """Replace the smallvision entries of an ONNX ModelProto's metadata_props with `props`."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def pytorch_probabilities(network: nn.Module, images: np.ndarray) -> np.ndarray:
    """The saved PyTorch model's probabilities, computed as `smallvision.predict` computes them (the reference)."""
    from smallvision.prediction import probabilities

    return probabilities(network, images, batch_size=BATCH)


PYTORCH = "the PyTorch model"
FP32_EXPORT = "the checked fp32 ONNX export"


def _agreement(reference: np.ndarray, candidate: np.ndarray, card) -> tuple[str, np.ndarray]:
    """Per image: whether two probability tables decide alike, and what that compares: the top class, or (a
    multi-label model) every label at its threshold."""
    if card.task == "multi_label":
        cuts = np.asarray(card.thresholds)
        same = (MULTI_LABEL.decide(reference, cuts) == MULTI_LABEL.decide(candidate, cuts)).all(1)
        return "labels", same
    return "top1", SINGLE_LABEL.decide(reference) == SINGLE_LABEL.decide(candidate)


def compare(reference: np.ndarray, candidate: np.ndarray, check: CheckImages, compared_with: str, card) -> dict:
    """How an export's probabilities agree with `compared_with`'s (the reference) on the same images: decisions
    (top1_* or, multi-label, labels_*: every thresholded label) and the largest probability difference."""
    kind, agree = _agreement(reference, candidate, card)
    return {
        "images": len(reference),
        "source": check.source,
        "compared_with": compared_with,
        f"{kind}_agreement": float(agree.mean()),
        f"{kind}_differ": int((~agree).sum()),
        "max_abs_diff": float(np.abs(reference.astype(np.float64) - candidate).max()),
    }


def fp32_check(reference: np.ndarray, candidate: np.ndarray, check: CheckImages, card) -> dict[str, Any]:
    """The check record of an fp32 export against the PyTorch model: every decision equal (top-1, or each label at
    its threshold), probabilities within 1e-4."""
    result = compare(reference, candidate, check, PYTORCH, card)
    differ = result.get("top1_differ", result.get("labels_differ"))
    result["tolerance"] = FP32_TOLERANCE  # a probability difference
    result["passed"] = bool(differ == 0 and result["max_abs_diff"] <= FP32_TOLERANCE)
    return result


def _refuse_if_failed(result: dict[str, Any], what: str, dest: Path) -> None:
    """Raise ExportCheckError naming the figures when a check did not pass."""
    if result["passed"]:
        return
    raise ExportCheckError(
        f"{dest}: the {what} export disagrees with the PyTorch model on {result['images']} images "
        f"({result['source']}): {_differ_words(result)}, max |probability difference| "
        f"{result['max_abs_diff']:.3g} (tolerance {result['tolerance']:g}); nothing was written there. "
        "The export is wrong, not your model: report it with the model's smallvision.json"
    )


def _differ_words(result: dict[str, Any]) -> str:
    """How many decisions differ, in words: top-1 classes, or images whose thresholded labels differ."""
    if "labels_differ" in result:
        return f"{result['labels_differ']} image(s) with different labels at the thresholds"
    return f"{result['top1_differ']} top-1 classes differ"


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of an exported .onnx file on uint8 images, in batches, through smallvision.runtime."""
    classifier = runtime.OnnxClassifier.load(path)
    return np.concatenate([classifier.probabilities(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def _example(card) -> torch.Tensor:
    """A uint8 example batch for tracing (two images: batch size 1 would let an exporter specialize it)."""
    return torch.zeros(2, card.image_size, card.image_size, 3, dtype=torch.uint8)


class ExporterError(SmallvisionError):
    """torch's exporter (torch.onnx.export or torch.jit.trace) could not convert the model; nothing was written."""


@contextlib.contextmanager
def _exporter_errors(exporter: str, card, other_format: str) -> Iterator[None]:
    """Turn an exporter's failure (a deep torch traceback) into an ExporterError naming the model and the way out."""
    try:
        yield
    except Exception as e:  # torch.export, dynamo and the tracer raise many unrelated types
        names = "+".join(b.name for b in card.backbones) or "none"
        cause = e
        while cause.__cause__ is not None:  # torch.onnx wraps torch.export's error, which names the construct
            cause = cause.__cause__
        first = (re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines() or [""])[0][:300]
        raise ExporterError(
            f"{exporter} could not convert this {card.recipe} model (backbone(s): {names}): {type(cause).__name__}: "
            f"{first}; nothing was written. Try `--format {other_format}` instead, and report it with the model's "
            "smallvision.json"
        ) from e


def write_onnx(network: nn.Module, card, path: Path) -> None:
    """Export the uint8 wrapper of `network` to one self-contained .onnx file with a dynamic batch axis.

    torch.onnx's dynamo exporter (torch.export + onnxscript), torch's default since 2.9: the TorchScript-based
    exporter gives the same numbers on every recipe's model here but warns it is deprecated and will be removed.
    """
    import onnx

    wrapper = Uint8Classifier(network).eval()
    with warnings.catch_warnings(), _exporter_errors("torch.onnx.export", card, "torchscript"):
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        program = torch.onnx.export(
            wrapper,
            (_example(card),),
            dynamo=True,
            input_names=[runtime.INPUT_NAME],
            output_names=[runtime.OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    proto = program.model_proto
    _set_metadata(proto, metadata(card))
    onnx.save_model(proto, str(path))


def _export_checked(
    write, run, what: str, network: nn.Module, card, dest: Path, check: CheckImages, reference, earlier: dict | None
) -> dict[str, Any]:
    """Write `dest` with `write` only if `run` on the written file agrees with the PyTorch model; its record.

    `earlier` (the export.json entry of a current file at `dest`, see current_export) skips the write when that
    file passes the check on these images: re-exporting the same weights with the same packages gives it again.
    """
    if earlier is not None:
        try:
            result = fp32_check(reference, run(dest, check.images), check, card)
        except Exception as e:  # a file this runtime no longer loads is simply written again
            result = {"passed": False, "error": f"{type(e).__name__}: {e}"}
        if result["passed"]:
            return {**{key: earlier[key] for key in KEPT_ON_REUSE}, "check": result, "reused": True}
        discard_export(dest)
        why = f" ({result['error']})" if "error" in result else ""
        log.warning(
            "%s: the unchanged %s export fails its check on %s%s; removed, exporting it again",
            dest,
            what,
            check.source,
            why,
        )
    start = time.perf_counter()
    with atomic.atomic_path(dest) as tmp:
        write(network, card, tmp)
        seconds = time.perf_counter() - start
        result = fp32_check(reference, run(tmp, check.images), check, card)
        _refuse_if_failed(result, what, dest)
        size, sha = tmp.stat().st_size, runtime.file_sha256(tmp)
    return {
        "file": dest.name,
        "file_sha256": sha,
        "check": result,
        "size_bytes": size,
        "export_seconds": round(seconds, 3),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "reused": False,
    }


def export_onnx(
    network: nn.Module, card, dest: Path, check: CheckImages, reference: np.ndarray, earlier: dict | None = None
) -> dict[str, Any]:
    """Write `dest` (.onnx) only if onnxruntime agrees with the PyTorch model on the check images; its record."""
    return _export_checked(write_onnx, run_onnx, "ONNX", network, card, dest, check, reference, earlier)


def write_torchscript(network: nn.Module, card, path: Path) -> None:
    """Trace the uint8 wrapper of `network` and save it, with the ONNX export's metadata as extra files.

    torch marks torch.jit deprecated (FutureWarning) in favour of torch.export; TorchScript is still what
    libtorch (C++) and older mobile runtimes load, so the format stays, silenced here and named in the manual
    (docs/export-and-serving.md).
    """
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", (FutureWarning, torch.jit.TracerWarning))
        with _exporter_errors("torch.jit.trace", card, "onnx"):
            traced = torch.jit.trace(Uint8Classifier(network).eval(), _example(card))
        torch.jit.save(traced, str(path), _extra_files=metadata(card))


def run_torchscript(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of a saved TorchScript export on uint8 images, loaded back with torch.jit.load."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
        chunks = [module(torch.from_numpy(images[i : i + BATCH])).numpy() for i in range(0, len(images), BATCH)]
    return np.concatenate(chunks)


def export_torchscript(
    network: nn.Module, card, dest: Path, check: CheckImages, reference: np.ndarray, earlier: dict | None = None
) -> dict[str, Any]:
    """Write `dest` (.pt) only if the reloaded TorchScript module agrees with the PyTorch model; its record."""
    args = (network, card, dest, check, reference, earlier)
    return _export_checked(write_torchscript, run_torchscript, "TorchScript", *args)


class Int8RefusedError(SmallvisionError):
    """An int8 export whose accuracy fell more than the tolerance; no int8 file was left."""


class _BatchReader:
    """onnxruntime's calibration data reader (duck-typed: get_next) over uint8 images in batches."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter([{runtime.INPUT_NAME: images[i : i + BATCH]} for i in range(0, len(images), BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration batch, or None when done."""
        return next(self.batches, None)

    def __iter__(self) -> _BatchReader:
        return self


def images_per_second(path: Path, images: np.ndarray) -> float:
    """Throughput of an .onnx export with onnxruntime's default threads, batches of BATCH, after one warm-up batch."""
    classifier = runtime.OnnxClassifier.load(path)
    classifier.probabilities(images[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(images), BATCH):
        classifier.probabilities(images[i : i + BATCH])
    return len(images) / (time.perf_counter() - start)


def write_int8(fp32: Path, card, path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization of an fp32 export (QDQ; uint8 activations, per-channel int8 weights; MinMax ranges).

    onnxruntime's recommended CPU form: quant_pre_process (shape inference and graph optimization) first, then
    quantize_static calibrated on real training images.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory(prefix="smallvision-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            _BatchReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    proto = onnx.load(str(path))
    _set_metadata(proto, {**metadata(card), "smallvision.quantization": "int8 static QDQ"})
    onnx.save_model(proto, str(path))


def export_int8(
    fp32: Path, card, dest: Path, calibration: CheckImages, val: CheckImages, tolerance: float
) -> dict[str, Any]:
    """Write `dest` (int8 .onnx) only if its val accuracy is at most `tolerance` points below the fp32 export's."""
    start = time.perf_counter()
    with atomic.atomic_path(dest) as tmp:
        write_int8(fp32, card, tmp, calibration.images)
        seconds = time.perf_counter() - start
        before, after = run_onnx(fp32, val.images), run_onnx(tmp, val.images)
        task = task_named(card.task)  # accuracy, or a multi-label model's macro mAP
        acc_fp32, acc_int8 = task.score(before, val.labels), task.score(after, val.labels)
        drop = (acc_fp32 - acc_int8) * 100
        result = compare(before, after, val, FP32_EXPORT, card)
        result["accuracy_tolerance_points"] = tolerance
        result["passed"] = bool(drop <= tolerance)
        result["criterion"] = (
            f"{METRIC_NAMES[task.metric]} drop on the val split, in points, at most accuracy_tolerance_points; "
            "decision agreement and max_abs_diff compare the int8 export with the checked fp32 ONNX export"
        )
        if not result["passed"]:
            raise Int8RefusedError(
                f"{dest}: int8 refused: {METRIC_NAMES[task.metric]} on {val.source} fell from {acc_fp32:.2%} "
                "(fp32 ONNX) to "
                f"{acc_int8:.2%} (int8), a drop of {drop:.2f} points > tolerance {tolerance:g}; no int8 file was "
                f"written ({fp32.name}, checked, was). Accept it with --int8-tolerance {np.ceil(drop * 100) / 100:g}"
            )
        entry = {
            "file": dest.name,
            "file_sha256": runtime.file_sha256(tmp),
            "check": result,
            "metric": METRIC_NAMES[task.metric],  # what accuracy_fp32/_int8 hold: accuracy, or macro mAP
            "accuracy_fp32": acc_fp32,
            "accuracy_int8": acc_int8,
            "accuracy_drop_points": drop,
            "size_bytes": tmp.stat().st_size,
            "fp32_size_bytes": fp32.stat().st_size,
            "images_per_second": images_per_second(tmp, val.images),
            "fp32_images_per_second": images_per_second(fp32, val.images),
            "calibration": {"images": len(calibration.images), "source": calibration.source},
            "quantization": "static, QDQ, uint8 activations, per-channel int8 weights, MinMax calibration",
            "export_seconds": round(seconds, 3),
        }
    return entry


def versions() -> dict[str, str]:
    """Versions of the packages an export was made and checked with, and a digest of smallvision's exporter and
    runtime code (its version number does not move between commits), so a kept export is one they would write."""
    import hashlib
    import importlib.metadata

    code = hashlib.sha256(Path(__file__).read_bytes() + Path(runtime.__file__).read_bytes()).hexdigest()
    out = {"smallvision exporter": code[:16]}
    for dist in ("smallvision", "torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def record_export(
    json_path: Path, model_sha256: str, card_sha256: str, entries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Merge format entries into export.json (entries of another model's weights are dropped as stale).

    Each entry keeps the sha256 of the card (smallvision.json: classes) it was checked with, beside its file's.
    """
    record = runtime.read_export_json(json_path)
    if record.get("model_sha256") != model_sha256:
        record = {}
    record["model_sha256"] = model_sha256
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for key, entry in entries.items():
        record[key] = {**entry, "card_sha256": card_sha256, "exported_at": stamp, "versions": versions()}
    atomic.write_json(json_path, record)
    return record


def discard_export(dest: Path) -> None:
    """Remove the file `dest` and its export.json entry: it failed a check, so nothing may run it as checked."""
    dest.unlink(missing_ok=True)
    json_path = dest.parent / runtime.EXPORT_JSON
    record = runtime.read_export_json(json_path)
    kept = {key: v for key, v in record.items() if not (isinstance(v, dict) and v.get("file") == dest.name)}
    if kept != record:
        atomic.write_json(json_path, kept)


def current_export(json_path: Path, dest: Path, key: str, model_sha256: str, card_sha256: str) -> dict | None:
    """export.json's `key` entry for `dest` when the file there is this model's passed export, unchanged since,
    made with the packages installed now; else None."""
    record = runtime.read_export_json(json_path)
    entry = record.get(key)
    made_alike = isinstance(entry, dict) and entry.get("versions") == versions() and set(KEPT_ON_REUSE) <= set(entry)
    if not made_alike or runtime.export_unvouched(record, key, dest, model_sha256, card_sha256) is not None:
        return None
    return entry


def load_check_images(card, folder: Path) -> CheckImages:
    """Images under a folder (any layout), decoded as predict decodes them; unreadable files are skipped."""
    from smallvision.data.decode import ImageDecodeError, decode_file
    from smallvision.prediction import expand_paths

    if not folder.is_dir():
        raise SmallvisionError(f"--check-images {folder}: not a folder; give a folder of images to check the export on")
    paths = _spread(expand_paths([folder]), MAX_CHECK_IMAGES)
    images, skipped = [], 0
    for path in paths:
        try:
            images.append(decode_file(path, card.image_size))
        except ImageDecodeError as e:
            skipped += 1
            log.warning("skipped %s", e)
    if not images:
        raise SmallvisionError(f"--check-images {folder}: none of its {len(paths)} image files could be read")
    note = f", {skipped} unreadable skipped" if skipped else ""
    return CheckImages(np.stack(images), f"{len(images)} images under {folder}{note}")


def data_missing_hint(data: str | Path, int8: bool) -> str:
    """What to do when a run's data folder is gone or its val split is empty: check on other images instead."""
    base = f"the run's data folder {data} is not there (or its val split is empty); "
    if int8:
        return base + (
            "--int8 needs its training and val images: put the folder back, or export without --int8 and "
            "pass --check-images DIR"
        )
    return base + "pass --check-images DIR (a folder of real images to check the export on)"


def split_images(card, index, split: str, limit: int, why: str) -> CheckImages:
    """Up to `limit` images of a run's split (spread over it), decoded through the image cache, with labels."""
    from smallvision.data.cache import decoded_images

    items = _spread(index.split(split), limit)
    if not items:
        raise SmallvisionError(f"{index.root}: the run's {split} split is empty; {why} needs its images")
    refuse_task_mismatch(card.task, index.task, index.root)
    unknown = sorted({index.classes[j] for it in items for j in it.label_set} - set(card.classes))
    if unknown:
        raise SmallvisionError(f"{index.root}: class(es) or label(s) {', '.join(unknown)} unknown to the model")
    images, failed = decoded_images(
        [it.path for it in items], [it.digest for it in items], card.image_size, progress=False
    )
    kept = [it for pos, it in enumerate(items) if pos not in failed]
    labels = task_named(card.task).targets_by_name(kept, index.classes, card.classes)
    total = len(index.split(split))
    spread = f", {len(items)} of its {total} spread over it" if len(items) < total else ""
    unread = f", {len(failed)} unreadable skipped" if failed else ""
    return CheckImages(images, f"the run's {split} split of {index.root}{spread}{unread}", labels)


def _spread(seq: list, limit: int) -> list:
    """At most `limit` elements, evenly spaced over the sequence (every class of a sorted index is represented)."""
    if len(seq) <= limit:
        return list(seq)
    picks = np.linspace(0, len(seq) - 1, limit).round().astype(int)
    return [seq[i] for i in picks]


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def destination(model_dir: Path, format: str, out: str | Path | None) -> Path:
    """Where an export goes: `out` (a file, or a folder to hold the default name) else the model folder's default.

    Refused before any work: a suffix that is not the format's, a non-default name inside the model folder (its
    export.json is keyed by format and find_export reads the default names), and a location that cannot be written.
    """
    default = runtime.ONNX_FILE if format == "onnx" else runtime.TORCHSCRIPT_FILE
    dest = model_dir / default if out is None else Path(out)
    if dest.is_dir():
        dest = dest / default
    suffix, other = (".onnx", "torchscript") if format == "onnx" else (".pt", "onnx")
    if dest.suffix != suffix:
        raise SmallvisionError(
            f"--out {out}: a --format {format} export is a {suffix} file, and {dest.name!r} ends in "
            f"{dest.suffix or 'no suffix'!r}; name it *{suffix} (or pass --format {other} if that is what you want)"
        )
    if dest.parent.resolve() == model_dir.resolve() and dest.name != default:
        raise SmallvisionError(
            f"--out {dest}: inside the model folder the {format} export is named {default} (its export.json and "
            f"`smallvision serve`/`predict --onnx` read that name); leave --out out, or write outside {model_dir}"
        )
    folder = _nearest_existing(dest.parent)
    if not folder.is_dir():
        raise SmallvisionError(f"--out {dest}: {folder} is a file, not a folder; pick a location in a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SmallvisionError(f"--out {dest}: cannot write in {folder} ({e.strerror}); pick a writable place") from e
    return dest


def _refuse_unapplied(model_dir: Path, format: str, int8: bool, int8_tolerance: float | None, index) -> None:
    """Refuse, by name, an export option that this export cannot apply."""
    if format not in FORMATS:
        raise SmallvisionError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    if int8 and format != "onnx":
        raise SmallvisionError(f"--int8 quantizes the ONNX export; it does not apply to --format {format}")
    if int8_tolerance is not None and not int8:
        raise SmallvisionError("--int8-tolerance applies only with --int8; add --int8 or leave it out")
    if int8 and index is None:
        raise SmallvisionError(
            f"--int8: {model_dir} has no run folder beside it (no {model_dir.resolve().parent / 'config.yaml'}), "
            "so there are no known training images to calibrate on and no validation split to measure the "
            "accuracy drop on; export the model inside its run folder (runs/NAME/model) to quantize it"
        )


def export_model(
    model_dir: str | Path,
    format: str = "onnx",
    *,
    out: str | Path | None = None,
    int8: bool = False,
    int8_tolerance: float | None = None,
    check_images: str | Path | None = None,
    index=None,
) -> dict[str, Any]:
    """Export a model folder and check it; write export.json beside the file; return its record and paths.

    The check images are `check_images` when given, else the val split of the run's `index` (its DatasetIndex).
    `int8` also quantizes the ONNX export, calibrated on the run's training images and measured on its val split.
    """
    from smallvision.models.folder import CARD_FILE, WEIGHTS_FILE, load_model

    model_dir = Path(model_dir)
    _refuse_unapplied(model_dir, format, int8, int8_tolerance, index)
    dest = destination(model_dir, format, out)
    network, card = load_model(model_dir)
    sha, card_sha = runtime.file_sha256(model_dir / WEIGHTS_FILE), runtime.file_sha256(model_dir / CARD_FILE)
    val = None
    if index is not None:
        if not index.split("val"):
            raise SmallvisionError(f"{model_dir}: {data_missing_hint(index.root, int8)}")
        val = split_images(card, index, "val", MAX_CHECK_IMAGES, "checking the export")
    if check_images is not None:
        check = load_check_images(card, Path(check_images))
    elif val is not None:
        check = val
    else:
        raise SmallvisionError(
            f"{model_dir}: no run folder beside it (no {model_dir.resolve().parent / 'config.yaml'}), so its "
            "validation images are unknown; give real images to check the export on with --check-images DIR"
        )
    if len(check.images) < MIN_CHECK_IMAGES:
        raise SmallvisionError(
            f"{check.source}: only {len(check.images)} readable check image(s) found; at least {MIN_CHECK_IMAGES} "
            "are needed, since top-1 agreement on so few says little about whether the export matches the model; "
            "give a folder with more images with --check-images DIR"
        )
    reference = pytorch_probabilities(network, check.images)
    writer = export_onnx if format == "onnx" else export_torchscript
    json_path = dest.parent / runtime.EXPORT_JSON
    earlier = current_export(json_path, dest, format, sha, card_sha)
    entry = writer(network, card, dest, check, reference, earlier)
    record = record_export(json_path, sha, card_sha, {format: entry})
    result = {"path": str(dest), "export_json": str(json_path), "record": record}
    if int8:
        calibration = split_images(card, index, "train", CALIBRATION_IMAGES, "int8 calibration")
        int8_dest = dest.with_name(dest.name.removesuffix(".onnx") + ".int8.onnx")
        tolerance = INT8_TOLERANCE if int8_tolerance is None else int8_tolerance
        entry = export_int8(dest, card, int8_dest, calibration, val, tolerance)
        result["record"] = record_export(json_path, sha, card_sha, {"int8": entry})
        result["int8_path"] = str(int8_dest)
    return result
