"""Backbones beyond EfficientNet, random weights: `frozen` and `finetune` train end to end, Grad-CAM sees a map.

MobileNetV3 pools before its conv_head (pre-logits width head_hidden_size 1024, not num_features 288); ResNet is
the plain case; a ViT has tokens, not a feature map, and no plain block sequence to cache activations at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import smallvision
from smallvision.data.decode import decode_file
from smallvision.errors import SmallvisionError
from smallvision.evaluation.plots import gradcam, gradcam_maps
from smallvision.models.backbone import bare_backbone, scratch_backbone
from smallvision.models.head import Head, ImageClassifier
from tests.imagegen import make_split_dataset

NETS = [
    ("mobilenetv3_small_050", 64),
    ("resnet18", 64),
    pytest.param("vit_tiny_patch16_224", 224, marks=pytest.mark.slow),  # timm's ViT takes 224 px only
]
CLASSES = 3


@pytest.fixture(scope="module")
def few_shapes(tmp_path_factory) -> Path:
    """Six training and three validation images per class: enough to train one epoch through every path."""
    return make_split_dataset(tmp_path_factory.mktemp("few-shapes"), train=6, val=3)


def _train(data: Path, out: Path, recipe: str, name: str, size: int):
    kw = {"epochs": 1, "batch_size": 8, "progress": False, "report": False}
    if recipe == "finetune":
        kw["finetune_epochs"] = 1
    return smallvision.train(data, recipe=recipe, backbone=name, weights="random", image_size=size, out=out, **kw)


def _val_images(data: Path, size: int) -> np.ndarray:
    """One validation image of each class, decoded as training decodes them."""
    return np.stack([decode_file(sorted(folder.iterdir())[0], size) for folder in sorted((data / "val").iterdir())])


@pytest.mark.parametrize(("name", "size"), NETS)
def test_frozen_trains_and_gradcam_shows_where_it_looked(few_shapes, tmp_path, name, size):
    r = _train(few_shapes, tmp_path / "run", "frozen", name, size)
    model, card = smallvision.load(r.model_dir)
    net = timm.create_model(name, pretrained=False, num_classes=0)
    assert card.head.in_features == net.head_hidden_size  # the pooled width, whatever the head does after pooling
    assert 0 <= r.metrics["val_accuracy"] <= 1
    images = _val_images(few_shapes, size)
    with torch.inference_mode():
        probs = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).softmax(1)
    assert probs.shape == (3, CLASSES) and torch.isfinite(probs).all()

    cam, pred = gradcam_maps(model, images)
    assert cam.shape == images.shape[:3] and pred.tolist() == probs.argmax(1).tolist()
    # a map from before the pooling: it varies across the image (one after the pooling is a single flat value)
    assert all(float(c.max() - c.min()) > 0.2 for c in cam), [float(c.max() - c.min()) for c in cam]
    png = np.asarray(Image.open(gradcam(model, images, card.classes, tmp_path / "gradcam.png")).convert("RGB"))
    assert len(np.unique(png.reshape(-1, 3), axis=0)) > 100


@pytest.mark.parametrize(("name", "size"), NETS)
def test_finetune_trains_the_top_blocks(few_shapes, tmp_path, name, size):
    r = _train(few_shapes, tmp_path / "run", "finetune", name, size)
    model, card = smallvision.load(r.model_dir)
    assert any(n.startswith("stage finetune: best epoch 1 of 1") for n in r.notes), r.notes
    cache = [n for n in r.notes if n.startswith("activation cache")]
    if name.startswith("vit"):
        assert cache == [
            "activation cache: not used (VisionTransformer's forward_features is not a plain sequence of its blocks, "
            "so there is no boundary to cut at); every epoch runs the whole network"
        ]
    else:
        assert cache and cache[0].startswith("activation cache: the frozen layers below the trainable blocks ran")
    assert card.head.in_features == timm.create_model(name, pretrained=False, num_classes=0).head_hidden_size


def test_gradcam_needs_no_trainable_weights_and_refuses_a_net_without_a_map():
    torch.manual_seed(0)
    backbone = bare_backbone("resnet18", "avg", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model = ImageClassifier([backbone], Head(512, CLASSES)).requires_grad_(False)  # a fully frozen model
    images = (np.random.default_rng(0).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    cam, _ = gradcam_maps(model, images)
    assert all(float(c.max() - c.min()) > 0.2 for c in cam)
    scratch = scratch_backbone("small_cnn", 64, False)
    with pytest.raises(SmallvisionError, match="Grad-CAM does not apply to SmallCNN"):
        gradcam_maps(ImageClassifier([scratch], Head(scratch.net.num_features, CLASSES)), images)


@pytest.mark.parametrize("recipe", ["features", "frozen"])
def test_vit_at_another_size_is_refused_with_the_size_it_takes(few_shapes, tmp_path, recipe):
    asked = r"takes 224x224 images only; got --image-size 64\. Fix: --image-size 224"
    with pytest.raises(SmallvisionError, match=asked):
        smallvision.train(
            few_shapes,
            recipe=recipe,
            backbone="vit_tiny_patch16_224",
            weights="random",
            image_size=64,
            out=tmp_path / "run",
            progress=False,
        )
