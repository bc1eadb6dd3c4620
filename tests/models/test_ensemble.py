"""Ensembles (members' probabilities averaged) and flip TTA carried by a model: saved, loaded, and applied by
predict, evaluate, export (ONNX, TorchScript), serve, inspect and the report's figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import smallvision
from smallvision.data.decode import decode_file
from smallvision.errors import SmallvisionError
from smallvision.models.backbone import scratch_backbone
from smallvision.models.folder import ensemble_card, load_model, save_model, save_state
from smallvision.models.head import EnsembleHead, Head, ImageClassifier, ensemble
from smallvision.prediction import expand_paths, probabilities

SIZE = 64
FAST = {"image_size": SIZE, "progress": False, "report": False}


@pytest.fixture(scope="module")
def members(shapes_data, tmp_path_factory):
    """Three tiny real models on the shapes: lite0 features (seeds 0 and 1: the same frozen backbone) and a small
    CNN from scratch (random weights source, options in its card)."""
    out = tmp_path_factory.mktemp("members")
    runs = [
        smallvision.train(shapes_data, recipe="scratch", backbone="small_cnn", epochs=2, out=out / "cnn", **FAST),
        smallvision.train(shapes_data, recipe="features", backbone="efficientnet_lite0", out=out / "a", **FAST),
        smallvision.train(
            shapes_data, recipe="features", backbone="efficientnet_lite0", seed=1, hidden=16, out=out / "b", **FAST
        ),
    ]
    return [r.model_dir for r in runs]


def _joined(member_dirs, folder, tta=None):
    """Load the members, join them, save the ensemble with the folder API (with tta, as a run saves a state dict
    and a card that names no first convolution); its folder."""
    loaded = [load_model(d) for d in member_dirs]
    model = ensemble([m for m, _ in loaded], tta=tta)
    card = ensemble_card(model, [c for _, c in loaded], recipe="auto", tta=tta)
    return save_state(model.state_dict(), card, folder) if tta else save_model(model, card, folder)


@pytest.fixture(scope="module")
def joined(members, tmp_path_factory):
    return _joined(members, tmp_path_factory.mktemp("ensemble") / "model")


@pytest.fixture(scope="module")
def joined_tta(members, tmp_path_factory):
    return _joined(members, tmp_path_factory.mktemp("ensemble-tta") / "model", tta="hflip")


@pytest.fixture(scope="module")
def test_images(shapes_data):
    paths = expand_paths([shapes_data / "test"])
    return paths, np.stack([decode_file(p, SIZE) for p in paths])


def _by_class(preds, classes) -> np.ndarray:
    return np.array([[dict(p.top)[c] for c in classes] for p in preds])


@pytest.fixture(scope="module")
def member_probs(members, test_images) -> dict[str, list[np.ndarray]]:
    """Each member's own probabilities on the test images and on their mirror images."""
    images = test_images[1]
    models = [load_model(d)[0] for d in members]
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    return {
        "plain": [probabilities(m, images) for m in models],
        "mirrored": [probabilities(m, mirrored) for m in models],
    }


def test_saved_ensemble_predicts_the_mean_of_its_members_probabilities(member_probs, joined, test_images):
    paths, images = test_images
    model, card = smallvision.load(joined)
    assert isinstance(model.head, EnsembleHead) and len(card.head.members) == 3 and card.tta is None
    assert [b.name for b in card.backbones] == ["small_cnn", "efficientnet_lite0"]  # the frozen lite0 runs once
    assert [m.backbones for m in card.head.members] == [[0], [1], [1]] and card.head.members[2].hidden == 16
    assert card.backbones[0].weights["source"] == "random" and card.backbones[0].options["image_size"] == SIZE
    expected = np.mean(member_probs["plain"], axis=0)
    got = _by_class(smallvision.predict(joined, paths, top_k=3), card.classes)
    assert np.abs(got - expected).max() < 1e-5
    assert all(
        np.abs(s - expected).max() > 1e-3 for s in member_probs["plain"]
    )  # the average differs from every member


def test_hflip_tta_averages_each_image_with_its_mirror_and_only_in_eval(member_probs, joined_tta, test_images):
    paths, images = test_images
    model, card = smallvision.load(joined_tta)
    assert card.tta == "hflip" and model.tta == "hflip"
    expected = np.mean(member_probs["plain"] + member_probs["mirrored"], axis=0)
    got = _by_class(smallvision.predict(joined_tta, paths, top_k=3), card.classes)
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(got - np.mean(member_probs["plain"], axis=0)).max() > 1e-4  # the mirror counts

    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)  # the same dropout masks for both
        trained = model(x)
        torch.manual_seed(0)
        assert torch.equal(trained, model.head(model.features(x)))  # training never sees the flip


def test_predict_tta_on_a_tta_model_equals_predict_tta_on_the_plain_one(joined, joined_tta, test_images):
    paths = test_images[0][:6]
    classes = smallvision.load(joined)[1].classes
    own = _by_class(smallvision.predict(joined_tta, paths, tta=True, top_k=3), classes)
    plain = _by_class(smallvision.predict(joined, paths, tta=True, top_k=3), classes)
    assert np.abs(own - plain).max() < 1e-5  # --tta's views hold the mirror images: the model's flip adds nothing
    assert smallvision.load(joined_tta)[0].tta == "hflip"


def test_evaluate_scores_the_ensemble_and_says_it_carries_tta(joined_tta, shapes_data, test_images):
    paths, images = test_images
    model, card = smallvision.load(joined_tta)
    m = smallvision.evaluate(joined_tta, shapes_data / "test", split="all")
    labels = np.array([card.classes.index(p.parent.name) for p in paths])
    assert m["n"] == len(paths) and m["model_tta"] == "hflip" and m["tta"] is False
    assert m["accuracy"] == pytest.approx(float((probabilities(model, images).argmax(1) == labels).mean()))


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("torchscript", marks=pytest.mark.slow)])
def test_exports_of_a_tta_ensemble_pass_their_check_and_run_alike(joined_tta, shapes_data, test_images, tmp_path, fmt):
    import shutil

    folder = shutil.copytree(joined_tta, tmp_path / "model")
    paths, images = test_images
    done = smallvision.export(folder, fmt, check_images=shapes_data / "test")
    check = done["record"][fmt]["check"]
    assert check["passed"] and check["images"] == len(paths) and check["max_abs_diff"] <= 1e-4
    reference = probabilities(smallvision.load(folder)[0], images)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(done["path"], providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: images})[0]
        assert np.abs(out - reference).max() < 1e-4
        card = json.loads(
            dict((p.key, p.value) for p in __import__("onnx").load(done["path"]).metadata_props)["smallvision.card"]
        )
        assert card["tta"] == "hflip" and len(card["head"]["members"]) == 3
        onnx_preds = _by_class(
            smallvision.predict(folder, paths, onnx=True, top_k=3), smallvision.load(folder)[1].classes
        )
        assert np.abs(onnx_preds - reference).max() < 1e-4

        from fastapi.testclient import TestClient

        from smallvision.serving import create_app

        with TestClient(create_app(folder)) as client:
            answer = client.post("/predict", files={"files": (paths[0].name, paths[0].read_bytes())})
        assert answer.status_code == 200, answer.text
        served = {t["class"]: t["probability"] for t in answer.json()["predictions"][0]["top"]}
        classes = smallvision.load(folder)[1].classes
        assert all(abs(served[c] - reference[0, i]) < 1e-4 for i, c in enumerate(classes))


def test_inspect_names_the_members_and_finds_frozen_weights_unchanged(joined_tta, tmp_path):
    text = smallvision.inspect(joined_tta, weights_check=True, kernels=tmp_path / "kernels.png")
    assert "ensemble of 3 heads, probabilities averaged: small_cnn; efficientnet_lite0; efficientnet_lite0" in text
    assert "test-time augmentation hflip" in text
    assert "small_cnn: trained from scratch" in text and "all frozen layers unchanged" in text
    assert "small_cnn:stem" in text and "efficientnet_lite0:stem" in text
    assert (tmp_path / "kernels.png").stat().st_size > 1000


def test_report_figures_draw_for_an_ensemble_whose_first_backbone_is_from_scratch(joined_tta, test_images, tmp_path):
    from smallvision.evaluation.plots import gradcam_maps
    from smallvision.evaluation.report import _gradcam, _kernels

    paths, images = test_images
    model, card = smallvision.load(joined_tta)
    cam, pred = gradcam_maps(model, images[:4])
    assert cam.shape == (4, SIZE, SIZE) and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert (pred == probabilities(model, images[:4]).argmax(1)).all()  # the model's own prediction, tta included
    assert _gradcam(joined_tta, images, card.classes, tmp_path / "gradcam.png").stat().st_size > 1000
    assert _kernels(joined_tta, tmp_path / "kernels.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_fast_inference_form_of_a_tta_ensemble_agrees(joined_tta, test_images):
    from smallvision.models.inference import inference_form

    images = test_images[1][:8]
    model = smallvision.load(joined_tta)[0]
    form = inference_form(model, (3, SIZE, SIZE), batch_size=8, precision="fp32", device="cpu")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    fast = form(x).softmax(1).numpy()
    assert np.abs(fast - probabilities(model, images)).max() < 1e-4


def test_old_model_folders_load_unchanged(members, test_images):
    folder = members[1]
    path = folder / "smallvision.json"
    raw = json.loads(path.read_text())
    assert raw["head"]["members"] == [] and raw["tta"] is None
    before = probabilities(load_model(folder)[0], test_images[1])
    del raw["head"]["members"], raw["tta"]  # as written before ensembles existed
    path.write_text(json.dumps(raw))
    model, card = load_model(folder)
    assert isinstance(model.head, Head) and card.tta is None and not card.head.members
    assert np.array_equal(probabilities(model, test_images[1]), before)


def test_a_card_that_does_not_fit_its_members_is_refused(joined, tmp_path):
    import shutil

    folder = shutil.copytree(joined, tmp_path / "model")
    raw = json.loads((folder / "smallvision.json").read_text())
    raw["head"]["members"][1]["in_features"] += 1
    (folder / "smallvision.json").write_text(json.dumps(raw))
    with pytest.raises(SmallvisionError, match="head member 1 reads"):
        load_model(folder)
    raw["head"]["members"][1]["backbones"] = [5]
    (folder / "smallvision.json").write_text(json.dumps(raw))
    with pytest.raises(SmallvisionError, match=r"head member 1 reads backbones \[5\]"):
        load_model(folder)


def test_members_of_different_input_sizes_or_bad_tta_are_refused():
    small, large = (scratch_backbone("small_cnn", s, False) for s in (32, 64))
    models = [ImageClassifier([b], Head(b.net.num_features, 3)) for b in (small, large)]
    with pytest.raises(SmallvisionError, match=r"different input sizes \(32 px \(member 0\), 64 px \(member 1\)\)"):
        ensemble(models)
    with pytest.raises(ValueError, match="tta 'vflip' unknown"):
        ImageClassifier([small], Head(small.net.num_features, 3), tta="vflip")

    import copy

    residual = scratch_backbone("residual_cnn", 32, True)
    joined = ImageClassifier([small, residual], Head(small.net.num_features + residual.net.num_features, 3, hidden=8))
    alone = ImageClassifier([copy.deepcopy(small)], Head(small.net.num_features, 3))
    both = ensemble([joined, alone]).eval()
    assert len(both.backbones) == 2 and both.head.groups == [[0, 1], [0]]  # the equal small_cnn runs once
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = (joined.eval()(x).softmax(1) + alone.eval()(x).softmax(1)) / 2
        out = both(x)
    assert torch.allclose(out.softmax(1), expected, atol=1e-6) and torch.isfinite(out).all()
