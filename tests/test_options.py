"""No option accepted and then ignored: every config field changes the run on every recipe that takes it, and is
refused, naming the option and the recipe, on every recipe that cannot apply it."""

from __future__ import annotations

import json

import pytest
import torch

import smallvision
from smallvision.config import build_config, user_set
from smallvision.errors import SmallvisionError


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


@pytest.mark.parametrize(
    "recipe,values,flag",
    [
        ("scratch", {"recipe": {"optimizer": "adam", "momentum": 0.5}}, "--momentum"),
        ("features", {"recipe": {"optimizer": "sgd", "momentum": 0.5}}, "--momentum"),  # head: onecycle cycles it
        ("scratch", {"recipe": {"schedule": "constant", "warmup_epochs": 2}}, "--warmup-epochs"),
        ("features", {"recipe": {"epochs": 3, "patience": 3}}, "--patience"),
        ("finetune", {"recipe": {"cached_views": 3, "augment": {"preset": "none"}}}, "--cached-views"),
        ("finetune", {"recipe": {"cached_views": 0}, "trainer": {"memory_budget": 2}}, "--memory-budget"),
        ("frozen", {"trainer": {"workers": 2}}, "--workers"),
        ("finetune", {"recipe": {"unfreeze_blocks": 2, "unfreeze_from": "blocks.5"}}, "--unfreeze-blocks"),
        ("auto", {"recipe": {"layer_decay": 0.5}}, "--layer-decay"),
        ("scratch", {"recipe": {"augment": {"fill_mode": "wrap"}}}, "--fill-mode"),
        ("scratch", {"model": {"backbone": "residual_cnn", "batch_norm": True}}, "--batch-norm"),
        ("scratch", {"model": {"backbone": "small_cnn+residual_cnn"}}, "--backbone"),
    ],
)
def test_options_that_would_change_nothing_are_refused(recipe, values, flag):
    values = {**values, "data": {"path": "x"}, "recipe": {"name": recipe, **values.get("recipe", {})}}
    with pytest.raises(SmallvisionError, match=f"option {flag} .* does not apply to recipe {recipe}: "):
        build_config(values)


def test_defaults_filled_by_the_code_are_not_taken_for_the_users():
    cfg = build_config({"data": {"path": "x"}, "recipe": {"name": "features", "lr": 0.01}})
    assert user_set(cfg) == {"data.path": "x", "recipe.name": "features", "recipe.lr": 0.01}
    assert cfg.recipe.schedule == "onecycle" and cfg.recipe.finetune_lr is None and cfg.model.hidden == 0
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "frozen"}}).recipe.schedule == "cosine"
    two = build_config({"data": {"path": "x"}, "recipe": {"name": "finetune"}}).recipe
    assert two.schedule is None and (two.schedule_for("head"), two.schedule_for("network")) == ("onecycle", "cosine")
