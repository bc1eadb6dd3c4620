"""Exports checked against the PyTorch model they came from, and the torch-free runtime that reads them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
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
from tests import forked_cli
from tests.conftest import shared_dataset
from tests.imagegen import make_class_folder

TINY = {"image_size": 32, "epochs": 1, "progress": False, "report": False}


@pytest.fixture(scope="module")
def models(shapes_data, session_cache, tmp_path_factory) -> Callable[[str], Path]:
    """Tiny runs, trained on first use: a scratch CNN and a joined pretrained pair (the single backbone: below)."""
    root = tmp_path_factory.mktemp("export-runs")
    kinds = {
        "scratch": {"recipe": "scratch", **TINY},
        "joined": {"recipe": "features", "backbone": "efficientnet_lite0+efficientnet_lite0", "pool": "max", **TINY},
    }
    trained: dict[str, Path] = {}

    def model_dir(kind: str) -> Path:
        if kind not in trained:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
                trained[kind] = smallvision.train(shapes_data, out=root / kind, **kinds[kind]).model_dir
        return trained[kind]

    return model_dir


@pytest.fixture(scope="module")
def hymenoptera_int8(session_cache, tmp_path_factory) -> tuple[Path, dict]:
    """A real run (hymenoptera, lite0 features at 64 px: seconds) exported with --int8, and export()'s answer.

    Its 153 val images make one image 0.65 accuracy points, so the tolerance here is 5 points (about 8 images);
    the refusal test below sets it under the drop measured here.
    """
    data = shared_dataset("hymenoptera")
    run = tmp_path_factory.mktemp("export-hymenoptera") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
        model_dir = smallvision.train(
            data, recipe="features", backbone="efficientnet_lite0", image_size=64, out=run, progress=False, report=False
        ).model_dir
        return model_dir, smallvision.export(model_dir, int8=True, int8_tolerance=5.0)


def _val_images(shapes_data: Path, size: int) -> tuple[list[Path], np.ndarray]:
    paths = sorted((shapes_data / "val").rglob("*.png"))
    return paths, np.stack([decode_file(p, size) for p in paths])


def test_runtime_import_leaves_torch_out():
    """A serving process imports smallvision.runtime and must not pay torch's import."""
    code = "import sys, smallvision.runtime; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def _assert_round_trip(model_dir: Path, images: np.ndarray) -> None:
    """The checked model.onnx, read back by onnx and by OnnxClassifier: metadata, graph signature, dynamic batch."""
    network, card = smallvision.load(model_dir)
    path = runtime.find_export(model_dir)
    assert path == model_dir / "model.onnx"
    classifier = runtime.OnnxClassifier.load(path, threads=1)
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
    assert all(t[0][1] >= t[1][1] for t in top)
    with pytest.raises(SmallvisionError, match=r"expected uint8 images of shape \[N, "):
        classifier.probabilities(images[:2].astype(np.float32) / 255)  # [0, 1] floats are not what it takes

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


@pytest.mark.parametrize(
    "kind",
    ["scratch", pytest.param("joined", marks=pytest.mark.slow)],  # two lite0 graphs: ~25-50 s of dynamo export
)
def test_onnx_round_trip_agrees_with_pytorch(models, shapes_data, kind):
    model_dir = models(kind)
    result = smallvision.export(model_dir)
    assert result["path"] == str(model_dir / "model.onnx")
    check = result["record"]["onnx"]["check"]
    assert check["passed"] and check["images"] == 30 and check["top1_agreement"] == 1.0
    assert check["max_abs_diff"] <= 1e-4 and "val split" in check["source"]
    assert check["compared_with"] == "the PyTorch model" and check["tolerance"] == 1e-4  # a probability difference
    _assert_round_trip(model_dir, _val_images(shapes_data, smallvision.load(model_dir)[1].image_size)[1])


def test_onnx_round_trip_of_a_pretrained_backbone_on_real_images(hymenoptera_int8):
    model_dir, result = hymenoptera_int8
    check = result["record"]["onnx"]["check"]
    assert check["passed"] and check["images"] == 153 and check["top1_agreement"] == 1.0
    paths = sorted((shared_dataset("hymenoptera") / "val").rglob("*.jpg"))[::20]
    _assert_round_trip(model_dir, np.stack([decode_file(p, 64) for p in paths]))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch marks torch.jit deprecated; the format is still asked for
def test_torchscript_round_trip(models, shapes_data):
    model_dir = models("scratch")
    result = smallvision.export(model_dir, format="torchscript")
    entry = result["record"]["torchscript"]
    assert entry["file"] == "model.torchscript.pt" and entry["check"]["passed"] and entry["check"]["images"] == 30
    assert entry["check"]["compared_with"] == "the PyTorch model" and entry["check"]["tolerance"] == 1e-4
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
        smallvision.export(models("scratch"), out=dest)
    assert "nothing was written" in str(e.value)
    assert not dest.parent.exists() or sorted(p.name for p in dest.parent.iterdir()) == []


def test_check_images_folder_and_find_export_refusing_a_stale_export(models, shapes_data, tmp_path):
    """A model folder with no run beside it is checked on --check-images; changed weights make its export stale."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.safetensors", "smallvision.json"):
        (model_dir / name).write_bytes((models("scratch") / name).read_bytes())
    with pytest.raises(SmallvisionError, match="--check-images DIR"):
        smallvision.export(model_dir)
    with pytest.raises(SmallvisionError, match="no run folder beside it.*no known training images"):
        smallvision.export(model_dir, int8=True, check_images=shapes_data / "test")
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


def test_int8_on_a_real_run_reports_accuracy_size_and_speed(hymenoptera_int8):
    model_dir, result = hymenoptera_int8
    record = json.loads((model_dir / "export.json").read_text())
    assert record == json.loads(json.dumps(result["record"]))
    onnx_check, q = record["onnx"]["check"], record["int8"]
    assert onnx_check["passed"] and onnx_check["images"] == 153 and onnx_check["max_abs_diff"] <= 1e-4
    assert q["file"] == "model.int8.onnx" and result["int8_path"] == str(model_dir / "model.int8.onnx")
    assert q["check"]["images"] == 153 and "val split" in q["check"]["source"]
    # int8's tolerance is accuracy points on the val split, its agreement figures against the fp32 export: named so
    assert q["check"]["compared_with"] == "the checked fp32 ONNX export" and "tolerance" not in q["check"]
    assert q["check"]["accuracy_tolerance_points"] == 5.0 and onnx_check["compared_with"] == "the PyTorch model"
    assert {"top1_agreement", "max_abs_diff", "images", "source", "passed"} <= q["check"].keys()
    assert q["calibration"]["images"] == 200 and "train split" in q["calibration"]["source"]
    # The fp32 export agrees with PyTorch on every top-1, so its accuracy is the saved model's, as evaluate says.
    evaluated = smallvision.evaluate(model_dir, shared_dataset("hymenoptera"))
    assert evaluated["split"] == "val" and q["accuracy_fp32"] == pytest.approx(evaluated["accuracy"])
    assert q["accuracy_drop_points"] == pytest.approx((q["accuracy_fp32"] - q["accuracy_int8"]) * 100)
    assert q["check"]["passed"] and q["accuracy_drop_points"] <= 5.0 and q["accuracy_int8"] > 0.7
    assert q["size_bytes"] < q["fp32_size_bytes"] / 3  # int8 weights: about a quarter of fp32's
    assert q["images_per_second"] > 0 and q["fp32_images_per_second"] > 0
    classifier = runtime.OnnxClassifier.load(runtime.find_export(model_dir, int8=True))
    assert classifier.classes == ["ants", "bees"] and classifier.image_size == 64


@pytest.mark.slow  # a second fp32 export and quantization of the real run (~20 s)
def test_int8_refused_below_the_measured_drop(hymenoptera_int8, tmp_path):
    """Quantization is deterministic, so a tolerance half a point under the drop just measured must refuse it."""
    model_dir, result = hymenoptera_int8
    drop = result["record"]["int8"]["accuracy_drop_points"]
    dest = tmp_path / "elsewhere" / "model.onnx"
    with pytest.raises(exporting.Int8RefusedError, match=f"a drop of {drop:.2f} points > tolerance") as e:
        smallvision.export(model_dir, out=dest, int8=True, int8_tolerance=drop - 0.5)
    assert "no int8 file was written" in str(e.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["export.json", "model.onnx"]
    assert "int8" not in json.loads((dest.parent / "export.json").read_text())


def test_cli_export_prints_the_check_and_writes_export_json(models, shapes_data, tmp_path):
    dest = tmp_path / "exported" / "shapes.onnx"
    args = ["export", models("scratch")]
    done = forked_cli.run([*args, "--check-images", shapes_data / "test", "--out", dest])
    assert done.returncode == 0, done.stderr
    record = json.loads((dest.parent / "export.json").read_text())
    check = record["onnx"]["check"]
    assert record["model_sha256"] == runtime.file_sha256(models("scratch") / "model.safetensors")
    assert record["onnx"]["file"] == "shapes.onnx" and check["passed"] and check["images"] == 18
    assert f"onnx: {dest}" in done.stdout
    assert f"check against the PyTorch model: 18 images ({check['source']}): top-1 agreement 1.0000" in done.stdout
    assert f"max |probability difference| {check['max_abs_diff']:.2e} (tolerance 0.0001): passed" in done.stdout
    assert f"record: {dest.parent / 'export.json'}" in done.stdout
    assert "not written again" not in done.stdout
    done = forked_cli.run([*args, "--check-images", shapes_data / "val", "--out", dest])
    written = record["onnx"]["written_at"]
    assert f"onnx: {dest} ({dest.stat().st_size / 1e6:.1f} MB, unchanged since {written}: not written again)" in (
        done.stdout
    )

    done = forked_cli.run([*args, "--format", "torchscript", "--int8"])  # refused before any work
    assert done.returncode == 1 and "error: --int8 quantizes the ONNX export" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "tflite"}, "--format 'tflite': use one of onnx, torchscript"),
        ({"int8_tolerance": 2.0}, "--int8-tolerance applies only with --int8"),
        ({"format": "torchscript", "int8": True}, "--int8 quantizes the ONNX export; it does not apply"),
    ],
)
def test_options_that_cannot_apply_are_refused(models, tmp_path, options, message):
    dest = tmp_path / "never" / "model.onnx"
    with pytest.raises(SmallvisionError, match=re.escape(message)):
        smallvision.export(models("scratch"), out=dest, **options)
    assert not dest.parent.exists()


def _bare_model_folder(models, tmp_path: Path) -> Path:
    """A copy of the scratch model folder with no run beside it (checked on --check-images)."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.safetensors", "smallvision.json"):
        (model_dir / name).write_bytes((models("scratch") / name).read_bytes())
    return model_dir


def test_find_export_refuses_a_replaced_export_file_or_an_edited_card(models, shapes_data, tmp_path):
    """export.json hashes the export file and smallvision.json too: either changed means the check is not for it."""
    model_dir = _bare_model_folder(models, tmp_path)
    record = smallvision.export(model_dir, check_images=shapes_data / "test")["record"]
    onnx_path, card_path = model_dir / "model.onnx", model_dir / "smallvision.json"
    assert record["onnx"]["file_sha256"] == runtime.file_sha256(onnx_path)
    assert record["onnx"]["card_sha256"] == runtime.file_sha256(card_path)
    assert runtime.find_export(model_dir) == onnx_path

    exported = onnx_path.read_bytes()
    onnx_path.write_bytes(exported[:-1] + bytes([exported[-1] ^ 1]))  # another file under the checked name
    with pytest.raises(SmallvisionError, match=r"stale export \(model.onnx changed.*run `smallvision export"):
        runtime.find_export(model_dir)
    onnx_path.write_bytes(exported)
    assert runtime.find_export(model_dir) == onnx_path

    card = json.loads(card_path.read_text())
    card["classes"][0] = "renamed"
    card_path.write_text(json.dumps(card))
    with pytest.raises(SmallvisionError, match=r"stale export \(smallvision.json changed.*run `smallvision export"):
        runtime.find_export(model_dir)


def test_an_unchanged_export_is_checked_again_not_written_again(models, shapes_data, tmp_path, monkeypatch, caplog):
    """Exporting the same weights with the same packages checks the file on these images and keeps it; a changed
    file or other package versions make a new one, and a kept file that fails this check is exported again."""
    model_dir = _bare_model_folder(models, tmp_path)
    onnx_path = model_dir / "model.onnx"
    first = smallvision.export(model_dir, check_images=shapes_data / "test")["record"]["onnx"]
    stat = onnx_path.stat()
    again = smallvision.export(model_dir, check_images=shapes_data / "val")["record"]["onnx"]
    assert not first["reused"] and again["reused"]
    assert (again["written_at"], again["file_sha256"]) == (first["written_at"], first["file_sha256"])
    assert again["check"]["passed"] and str(shapes_data / "val") in again["check"]["source"]
    assert onnx_path.stat().st_mtime_ns == stat.st_mtime_ns and runtime.find_export(model_dir) == onnx_path

    exported = onnx_path.read_bytes()
    onnx_path.write_bytes(exported[:-1] + bytes([exported[-1] ^ 1]))
    rewritten = smallvision.export(model_dir, check_images=shapes_data / "test")["record"]["onnx"]
    assert not rewritten["reused"] and runtime.find_export(model_dir) == onnx_path
    record = json.loads((model_dir / "export.json").read_text())
    record["onnx"]["versions"]["onnxruntime"] = "0.0"
    (model_dir / "export.json").write_text(json.dumps(record))
    assert not smallvision.export(model_dir, check_images=shapes_data / "test")["record"]["onnx"]["reused"]

    assert smallvision.export(model_dir, check_images=shapes_data / "test")["record"]["onnx"]["reused"]
    card = json.loads((model_dir / "smallvision.json").read_text())
    (model_dir / "smallvision.json").write_text(json.dumps({**card, "classes": card["classes"][::-1]}))
    assert not smallvision.export(model_dir, check_images=shapes_data / "test")["record"]["onnx"]["reused"]

    smallvision.export(model_dir, "torchscript", check_images=shapes_data / "test")
    monkeypatch.setattr(exporting, "FP32_TOLERANCE", -1.0)  # nothing passes: the kept file fails, so does a new one
    with pytest.raises(exporting.ExportCheckError, match="disagrees with the PyTorch model"):
        smallvision.export(model_dir, "torchscript", check_images=shapes_data / "test")
    assert "the unchanged TorchScript export fails its check" in caplog.text
    record = json.loads((model_dir / "export.json").read_text())
    assert "torchscript" not in record and record["onnx"]["check"]["passed"]  # the file found wrong is not vouched for
    assert not (model_dir / "model.torchscript.pt").exists()  # nor left: a failed export leaves nothing there


@pytest.mark.parametrize(
    ("format", "name", "message"),
    [
        ("onnx", "model.pt", "a --format onnx export is a .onnx file, and 'model.pt' ends in '.pt'"),
        ("torchscript", "model.onnx", "a --format torchscript export is a .pt file, and 'model.onnx' ends in '.onnx'"),
        ("onnx", "model", "'model' ends in 'no suffix'; name it *.onnx"),
    ],
)
def test_out_suffix_must_match_the_format(models, tmp_path, format, name, message):
    with pytest.raises(SmallvisionError, match=re.escape(message)):
        smallvision.export(models("scratch"), format, out=tmp_path / "out" / name)
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch marks torch.jit deprecated; the format is still asked for
def test_out_an_existing_folder_gets_the_default_name(models, shapes_data, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    result = smallvision.export(models("scratch"), "torchscript", out=folder, check_images=shapes_data / "test")
    assert result["path"] == str(folder / "model.torchscript.pt") and result["export_json"] == str(
        folder / "export.json"
    )
    assert json.loads((folder / "export.json").read_text())["torchscript"]["file"] == "model.torchscript.pt"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.torchscript.pt"]


def test_out_where_nothing_can_be_written_is_refused_before_any_work(models, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SmallvisionError, match=re.escape(f"{blocker} is a file, not a folder")):
        smallvision.export(models("scratch"), out=blocker / "sub" / "model.onnx")
    assert blocker.read_text() == "not a folder"


def test_out_inside_the_model_folder_must_use_the_default_name(models):
    """export.json there is keyed by format and find_export reads model.onnx: another name would shadow a good one."""
    model_dir = models("scratch")
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(SmallvisionError, match=r"inside the model folder the onnx export is named model\.onnx"):
        smallvision.export(model_dir, out=model_dir / "other.onnx")
    with pytest.raises(SmallvisionError, match=r"the onnx export is named model\.onnx"):
        smallvision.export(model_dir, out=model_dir / "model.int8.onnx")
    assert sorted(p.name for p in model_dir.iterdir()) == before


def _data_dependent_forward(self, images: torch.Tensor) -> torch.Tensor:
    """A branch on a pixel value: torch.export cannot capture it in one graph."""
    x = images.permute(0, 3, 1, 2).float() / 255
    if x.mean() > 0.5:
        x = x.flip(3)
    return self.network(x).softmax(dim=1)


def _non_tensor_forward(self, images: torch.Tensor) -> float:
    """A Python number out: torch.jit.trace can only trace tensor outputs."""
    return float(images.float().mean())


@pytest.mark.parametrize(
    ("format", "forward", "message"),
    [
        ("onnx", _data_dependent_forward, r"torch\.onnx\.export could not convert this scratch model "),
        ("torchscript", _non_tensor_forward, r"torch\.jit\.trace could not convert this scratch model "),
    ],
)
def test_exporter_failures_name_the_model_and_the_other_format(models, monkeypatch, tmp_path, format, forward, message):
    monkeypatch.setattr(exporting.Uint8Classifier, "forward", forward)
    other = "torchscript" if format == "onnx" else "onnx"
    dest = tmp_path / "out" / ("model.onnx" if format == "onnx" else "model.torchscript.pt")
    with pytest.raises(exporting.ExporterError, match=message + r"\(backbone\(s\): small_cnn\): ") as e:
        smallvision.export(models("scratch"), format, out=dest)
    assert f"Try `--format {other}` instead" in str(e.value) and "nothing was written" in str(e.value)
    assert "\x1b[" not in str(e.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == []


@pytest.mark.parametrize("count", [1, 7])
def test_too_few_check_images_are_refused(models, shapes_data, tmp_path, count):
    """One image agreeing says little: fewer than 8 is refused, saying how many were found."""
    folder = tmp_path / "few"
    folder.mkdir()
    for path in sorted((shapes_data / "test").rglob("*.png"))[:count]:
        (folder / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    dest = tmp_path / "out" / "model.onnx"
    with pytest.raises(SmallvisionError, match=rf"only {count} readable check image\(s\) found; at least 8 are needed"):
        smallvision.export(models("scratch"), out=dest, check_images=folder)
    assert not dest.exists()


def test_the_check_uses_the_run_s_recorded_val_split_not_photos_added_since(models, shapes_data, tmp_path, caplog):
    """Photos added to the run's data folder after training stay out of the export's check; a run with no
    split.csv (an older smallvision) is refused, naming --check-images."""
    trained = models("scratch").parent
    data = shutil.copytree(shapes_data, tmp_path / "data")
    run = shutil.copytree(trained, tmp_path / "run")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(shapes_data), str(data)))
    make_class_folder(data / "val", 4, seed=21)  # 12 val photos added since training
    check = smallvision.export(run / "model")["record"]["onnx"]["check"]
    assert check["images"] == 30 and check["passed"] and "12 file(s) new since training (val/circle/" in caplog.text
    (run / "split.csv").unlink()
    with pytest.raises(SmallvisionError, match=r"no split.csv.*pass --check-images DIR"):
        smallvision.export(run / "model")


@pytest.mark.parametrize("int8", [False, True])
def test_a_run_whose_data_folder_moved_points_to_check_images(models, tmp_path, int8):
    """The run folder's config.yaml names a data folder that is gone: say so and name --check-images."""
    trained = models("scratch")
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for name in ("model.safetensors", "smallvision.json"):
        (run / "model" / name).write_bytes((trained / name).read_bytes())
    config = (trained.parent / "config.yaml").read_text()
    data = re.search(r"^  path: (.+)$", config, re.M).group(1)
    moved = tmp_path / "moved-away"
    (run / "config.yaml").write_text(config.replace(data, str(moved)))
    expected = f"the run's data folder {moved} is not there (or its val split is empty); "
    expected += "--int8 needs its training and val images" if int8 else "pass --check-images DIR"
    with pytest.raises(SmallvisionError, match=re.escape(expected)):
        smallvision.export(run / "model", int8=int8)
    assert sorted(p.name for p in (run / "model").iterdir()) == ["model.safetensors", "smallvision.json"]
