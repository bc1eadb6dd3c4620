"""No option accepted and then ignored: every config field changes the run on every recipe that takes it, and is
refused, naming the option and the recipe, on every recipe that cannot apply it."""

from __future__ import annotations

import json

import torch

import smallvision
from smallvision.config import build_config


def test_hidden_zero_means_no_hidden_layer_even_for_small_cnn(shapes_data, tmp_path):
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "scratch"}}).model.hidden == 512
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "features"}}).model.hidden == 0
    r = smallvision.train(
        shapes_data, recipe="scratch", hidden=0, image_size=32, epochs=1, out=tmp_path / "run", progress=False
    )
    model, card = smallvision.load(r.model_dir)
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert card.head.hidden == 0 and len(linears) == 1 and linears[0].in_features == 128 * 2 * 2
    saved = json.loads((r.model_dir / "smallvision.json").read_text())
    assert saved["head"]["hidden"] == 0
