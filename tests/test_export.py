"""Exports checked against the PyTorch model they came from, and the torch-free runtime that reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import smallvision
from smallvision import exporting, runtime
from smallvision.data.decode import decode_file
from smallvision.errors import SmallvisionError
from smallvision.models.folder import save_model
from smallvision.prediction import probabilities

ROOT = Path(__file__).resolve().parents[1]
TINY = {"image_size": 32, "epochs": 1, "progress": False, "report": False}


@pytest.fixture(scope="module")
def models(shapes_data, session_cache, tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run per kind of model: a scratch CNN, one pretrained backbone, a joined pretrained pair."""
    root = tmp_path_factory.mktemp("export-runs")
    kinds = {
        "scratch": {"recipe": "scratch", **TINY},
        "single": {"recipe": "features", "backbone": "efficientnet_lite0", **TINY},
        "joined": {"recipe": "features", "backbone": "efficientnet_lite0+efficientnet_lite0", "pool": "max", **TINY},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
        return {k: smallvision.train(shapes_data, out=root / k, **kw).model_dir for k, kw in kinds.items()}


def _val_images(shapes_data: Path, size: int) -> tuple[list[Path], np.ndarray]:
    paths = sorted((shapes_data / "val").rglob("*.png"))
    return paths, np.stack([decode_file(p, size) for p in paths])


def test_runtime_import_leaves_torch_out():
    """A serving process imports smallvision.runtime and must not pay torch's import."""
    code = "import sys, smallvision.runtime; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("kind", ["scratch", "single", "joined"])
def test_onnx_round_trip_agrees_with_pytorch(models, shapes_data, kind):
    model_dir = models[kind]
    result = smallvision.export(model_dir)
    path = model_dir / "model.onnx"
    assert result["path"] == str(path) and path.is_file()
    check = result["record"]["onnx"]["check"]
    assert check["passed"] and check["images"] == 30 and check["top1_agreement"] == 1.0
    assert check["max_abs_diff"] <= 1e-4 and "val split" in check["source"]

    network, card = smallvision.load(model_dir)
    paths, images = _val_images(shapes_data, card.image_size)
    classifier = runtime.OnnxClassifier.load(runtime.find_export(model_dir))
    assert classifier.classes == card.classes and classifier.image_size == card.image_size
    assert classifier.card["recipe"] == card.recipe
    assert classifier.card["backbones"] == [b.name for b in card.backbones]
    reference = probabilities(network, images)
    for batch in (images[:1], images[:5]):  # the batch axis is dynamic
        got = classifier.probabilities(batch)
        assert got.shape == (len(batch), len(card.classes)) and got.dtype == np.float32
        assert np.abs(got - reference[: len(batch)]).max() <= 1e-4
        assert (got.argmax(1) == reference[: len(batch)].argmax(1)).all()
    top = classifier.top_k(classifier.probabilities(images[:5]), 2)
    assert [t[0][0] for t in top] == [card.classes[i] for i in reference[:5].argmax(1)]
    assert top[0][0][1] >= top[0][1][1]

    proto = onnx.load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["smallvision.classes"]) == card.classes
    assert props["smallvision.image_size"] == str(card.image_size)
    assert props["smallvision.resize"] == card.resize and props["smallvision.format_version"] == "1"
    assert json.loads(props["smallvision.card"])["metrics"] == card.metrics
    (graph_in,), (graph_out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in graph_in.type.tensor_type.shape.dim]
    assert graph_in.name == "images" and dims == ["batch", card.image_size, card.image_size, 3]
    assert graph_in.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph_out.name == "probabilities" and graph_out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch marks torch.jit deprecated; the format is still asked for
def test_torchscript_round_trip(models, shapes_data):
    model_dir = models["single"]
    result = smallvision.export(model_dir, format="torchscript")
    entry = result["record"]["torchscript"]
    assert entry["file"] == "model.torchscript.pt" and entry["check"]["passed"] and entry["check"]["images"] == 30
    network, card = smallvision.load(model_dir)
    _, images = _val_images(shapes_data, card.image_size)
    extra = {"smallvision.classes": "", "smallvision.image_size": ""}
    module = torch.jit.load(str(model_dir / "model.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["smallvision.classes"]) == card.classes
    assert int(extra["smallvision.image_size"]) == card.image_size
    reference = probabilities(network, images)
    with torch.inference_mode():
        for n in (1, 5):
            got = module(torch.from_numpy(images[:n])).numpy()
            assert got.shape == (n, len(card.classes)) and np.abs(got - reference[:n]).max() <= 1e-4


def test_broken_export_is_caught_and_nothing_is_left(models, monkeypatch, tmp_path):
    """A wrapper that scales pixels by 127.5 instead of 255 (inputs in [0, 2]) must fail the check."""
    monkeypatch.setattr(exporting, "PIXEL_SCALE", 127.5)
    dest = tmp_path / "out" / "broken.onnx"
    with pytest.raises(exporting.ExportCheckError, match="disagrees with the PyTorch model") as e:
        smallvision.export(models["scratch"], out=dest)
    assert "nothing was written" in str(e.value)
    assert not dest.parent.exists() or sorted(p.name for p in dest.parent.iterdir()) == []


def test_check_images_folder_and_find_export_refusing_a_stale_export(models, shapes_data, tmp_path):
    """A model folder with no run beside it is checked on --check-images; changed weights make its export stale."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.safetensors", "smallvision.json"):
        (model_dir / name).write_bytes((models["scratch"] / name).read_bytes())
    with pytest.raises(SmallvisionError, match="--check-images DIR"):
        smallvision.export(model_dir)
    with pytest.raises(SmallvisionError, match="run `smallvision export"):
        runtime.find_export(model_dir)

    result = smallvision.export(model_dir, check_images=shapes_data / "test")
    check = result["record"]["onnx"]["check"]
    assert check["passed"] and check["images"] == 18 and str(shapes_data / "test") in check["source"]
    assert runtime.find_export(model_dir) == model_dir / "model.onnx"
    with pytest.raises(SmallvisionError, match="no checked model.int8.onnx"):
        runtime.find_export(model_dir, int8=True)

    network, card = smallvision.load(model_dir)
    state = network.state_dict()
    state["head.layers.1.bias"] = state["head.layers.1.bias"] + 1.0
    network.load_state_dict(state)
    save_model(network, card, model_dir)
    with pytest.raises(SmallvisionError, match="stale export"):
        runtime.find_export(model_dir)
