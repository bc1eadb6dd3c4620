"""Model folders load only from safetensors + validated JSON; anything else is a clear error, never code run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from smallvision.engine.lightning import _load_weights
from smallvision.errors import SmallvisionError
from smallvision.models.backbone import scratch_backbone
from smallvision.models.folder import ModelCard, load_model, save_model
from smallvision.models.head import Head, ImageClassifier
from tests.hostile import malicious_pickle


@pytest.fixture
def folder(tmp_path):
    backbone = scratch_backbone("small_cnn", 32, False)
    model = ImageClassifier([backbone], Head(backbone.net.num_features, 2))
    card = ModelCard(
        classes=["a", "b"],
        image_size=32,
        resize="shorter-side-bicubic-center-crop",
        recipe="scratch",
        backbones=[
            {
                "name": "small_cnn",
                "pool": "none",
                "mean": (0, 0, 0),
                "std": (1, 1, 1),
                "options": {"image_size": 32, "batch_norm": False},
            }
        ],
        head={"in_features": backbone.net.num_features},
    )
    return save_model(model, card, tmp_path / "model")


def _edit_card(folder, **changes):
    path = folder / "smallvision.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_round_trip_loads(folder):
    model, card = load_model(folder)
    assert card.classes == ["a", "b"] and model(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_a_single_networks_own_flip_and_task_load_with_it(folder):
    """auto keeps flipped views on one network (no ensemble): predict, evaluate, export and serve must apply them,
    so the card's tta is the loaded model's; a multi-label card's model averages sigmoids, not softmaxes."""
    plain, _ = load_model(folder)
    _edit_card(folder, tta="hflip", task="multi_label", thresholds=[0.3, 0.6])
    model, card = load_model(folder)
    assert model.tta == "hflip" and card.thresholds == [0.3, 0.6]
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        mean = (plain(x).sigmoid() + plain(x.flip(-1)).sigmoid()) / 2
        assert torch.allclose(model.task.probabilities(model(x)), mean, atol=1e-6)
        assert not torch.allclose(model.task.probabilities(model(x)), plain(x).sigmoid(), atol=1e-4)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"classes": ["a", "b", "c"]}, "does not match smallvision.json"),
        ({"classes": ["only"]}, "field 'classes'"),
        ({"image_size": "big"}, "field 'image_size'"),
        ({"surprise": 1}, "field 'surprise'"),
        ({"head": {"in_features": 7}}, "does not match smallvision.json"),
    ],
)
def test_bad_cards_are_clear_errors(folder, change, message):
    _edit_card(folder, **change)
    with pytest.raises(SmallvisionError, match=message):
        load_model(folder)


def test_weights_with_a_wrong_shape_are_named(folder):
    state = load_file(str(folder / "model.safetensors"))
    state["head.layers.1.bias"] = torch.zeros(5)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(SmallvisionError, match="wrong shape: head.layers.1.bias"):
        load_model(folder)


def test_pickles_never_run(folder, tmp_path):
    marker = tmp_path / "pwned"
    (folder / "model.safetensors").write_bytes(malicious_pickle(marker, "w"))
    with pytest.raises(SmallvisionError, match="unreadable safetensors"):
        load_model(folder)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(malicious_pickle(marker, "state_dict"))
    with pytest.raises(SmallvisionError, match="tensors only"):
        _load_weights(torch.nn.Linear(1, 1), ckpt)
    assert not marker.exists()


def test_missing_pieces(folder, tmp_path):
    with pytest.raises(SmallvisionError, match="not a model folder"):
        load_model(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(SmallvisionError, match="model.safetensors is missing"):
        load_model(folder)
