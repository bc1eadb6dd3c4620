"""Run a checked ONNX export without torch: numpy + onnxruntime + smallvision's own decoding.

Importing this module must not import torch, so a serving process or `predict --onnx` starts in about a second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from smallvision.errors import SmallvisionError

EXPORT_JSON = "export.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
WEIGHTS_FILE = "model.safetensors"  # the same names as models.folder's, which imports pydantic models
CARD_FILE = "smallvision.json"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
METADATA_FORMAT_VERSION = "1"


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in chunks (what export.json records of model.safetensors)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata(path: Path, props: dict[str, str]) -> tuple[list[str], int, dict[str, Any]]:
    """Classes, image size and card from an export's metadata_props, with errors naming the file."""
    missing = [k for k in ("smallvision.classes", "smallvision.image_size") if k not in props]
    if missing:
        raise SmallvisionError(
            f"{path}: not a smallvision export (metadata {', '.join(missing)} missing); "
            "export the model folder with `smallvision export MODEL_DIR`"
        )
    version = props.get("smallvision.format_version")
    if version != METADATA_FORMAT_VERSION:
        raise SmallvisionError(
            f"{path}: export format_version {version!r} is not supported (this smallvision reads "
            f"{METADATA_FORMAT_VERSION!r}); re-export with `smallvision export MODEL_DIR`"
        )
    try:
        classes = json.loads(props["smallvision.classes"])
        image_size = int(props["smallvision.image_size"])
        card = json.loads(props.get("smallvision.card", "{}"))
    except (ValueError, TypeError) as e:
        raise SmallvisionError(f"{path}: unreadable smallvision metadata ({e}); re-export the model") from e
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not isinstance(card, dict):
        raise SmallvisionError(f"{path}: malformed smallvision metadata; re-export the model")
    return classes, image_size, card


class OnnxClassifier:
    """An exported classifier: uint8 NHWC RGB images in, class probabilities out, via onnxruntime."""

    def __init__(self, path: Path, session: Any, classes: list[str], image_size: int, card: dict[str, Any]) -> None:
        """Wrap an open onnxruntime session and the metadata read from its file (use `load`)."""
        self.path = path
        self.session = session
        self.classes = classes
        self.image_size = image_size
        self.card = card

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, *, spin: bool = True) -> OnnxClassifier:
        """Open an exported .onnx file on the CPU; `threads` bounds onnxruntime's intra-op threads.

        `spin=False` lets onnxruntime's idle threads sleep instead of busy-waiting for the next run: what a server
        wants, whose decoding and HTTP threads share the CPU (measured: about 35% more images/s there).
        """
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SmallvisionError(f"{path}: no such export; run `smallvision export MODEL_DIR` first")
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise SmallvisionError(f"threads must be at least 1 (got {threads})")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types for unreadable files
            raise SmallvisionError(f"{path}: onnxruntime cannot load it ({e}); re-export the model") from e
        props = dict(session.get_modelmeta().custom_metadata_map)
        classes, image_size, card = _metadata(path, props)
        return cls(path, session, classes, image_size, card)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [N, C], of uint8 [N, S, S, 3] RGB images (as decode_file returns)."""
        images = np.asarray(images)
        expected = (self.image_size, self.image_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise SmallvisionError(
                f"{self.path}: expected uint8 images of shape [N, {expected[0]}, {expected[1]}, 3], "
                f"got {images.dtype} {list(images.shape)}; decode them with smallvision.data.decode.decode_file"
            )
        if images.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images)})
        return probs

    def top_k(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The k most probable (class, probability) pairs of each row, most probable first."""
        if k < 1:
            raise SmallvisionError(f"k must be at least 1 (got {k})")
        k = min(k, len(self.classes))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order, strict=True)]


def read_export_json(path: str | Path) -> dict[str, Any]:
    """An export.json's object, or {} when there is none; an unreadable one is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SmallvisionError(f"{path}: not valid JSON ({e}); run `smallvision export` again") from e
    if not isinstance(data, dict):
        raise SmallvisionError(f"{path}: expected a JSON object; run `smallvision export` again")
    return data


def find_export(model_dir: str | Path, int8: bool = False) -> Path:
    """The model folder's checked model.onnx (or model.int8.onnx), refused when unchecked, failed or stale.

    Stale: the sha256 of model.safetensors, smallvision.json (classes) or the export file itself differs from the
    one export.json recorded when the check passed, so the checked file is not what would run.
    """
    model_dir = Path(model_dir)
    key, name = ("int8", INT8_FILE) if int8 else ("onnx", ONNX_FILE)
    flag = " --int8" if int8 else ""
    fix = f"run `smallvision export {model_dir} --format onnx{flag}`"
    record = read_export_json(model_dir / EXPORT_JSON)
    path = model_dir / name
    why = export_unvouched(record, key, path)
    if why == "absent":
        raise SmallvisionError(f"{model_dir}: no checked {name} export; {fix}")
    if why == "failed":
        raise SmallvisionError(f"{path}: its check against the PyTorch model did not pass; {fix}")
    weights, card = model_dir / WEIGHTS_FILE, model_dir / CARD_FILE
    for needed in (weights, card):
        if not needed.is_file():
            raise SmallvisionError(f"{model_dir}: {needed.name} is missing, so {name} cannot be matched to the model")
    changed = export_unvouched(record, key, path, file_sha256(weights), file_sha256(card))
    if changed is not None:
        raise SmallvisionError(
            f"{path}: stale export ({changed} changed after it was exported, or export.json predates its hash); {fix}"
        )
    return path


def export_unvouched(
    record: dict, key: str, path: Path, model_sha256: str | None = None, card_sha256: str | None = None
) -> str | None:
    """Why export.json's `record` does not vouch for the file at `path` as its `key` export: "absent", "failed", or
    the name of the file whose hash changed since the check passed (weights and card checked when their hashes are
    given); None when it does."""
    entry = record.get(key)
    if not isinstance(entry, dict) or not path.is_file():
        return "absent"
    if entry.get("file") != path.name or not (entry.get("check") or {}).get("passed"):
        return "failed"
    if model_sha256 is None or card_sha256 is None:
        return None
    if record.get("model_sha256") != model_sha256:
        return WEIGHTS_FILE
    if entry.get("card_sha256") != card_sha256:
        return CARD_FILE
    return path.name if entry.get("file_sha256") != file_sha256(path) else None
