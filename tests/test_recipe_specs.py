"""The recipe seam: every recipe is one row of recipe_specs.SPECS with a runner, and no module compares a recipe's
name with a literal (a fact about a recipe lives in its row, so a new recipe is one row, not twenty edits)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from smallvision.config import APPLIES, RECIPES, build_config, refusal
from smallvision.errors import SmallvisionError
from smallvision.recipe_specs import SPECS
from smallvision.recipes.registry import recipe_runner

PACKAGE = Path(__file__).resolve().parents[1] / "smallvision"


def test_every_row_names_a_runner_in_its_own_package():
    assert set(SPECS) == set(RECIPES)
    for name, row in SPECS.items():
        runner = recipe_runner(name)
        package = "smallvision.auto" if row.plans else "smallvision.recipes"
        assert runner.__module__.startswith(package + "."), (name, runner.__module__)
        assert list(inspect.signature(runner).parameters)[:1] == ["ctx"]
    assert recipe_runner("finetune") is not recipe_runner("unfreeze")
    with pytest.raises(SmallvisionError, match="no such recipe"):
        recipe_runner("nope")


@pytest.mark.parametrize("name", list(SPECS))
def test_a_rows_defaults_are_what_config_resolves(name):
    row = SPECS[name]
    cfg = build_config({"data": {"path": "x"}, "recipe": {"name": name}})
    assert cfg.recipe.epochs == row.epochs
    assert cfg.model.backbone == row.backbone
    assert (cfg.recipe.finetune_lr is not None) == row.fine_tunes
    if row.fine_tunes:
        assert cfg.recipe.finetune_lr == pytest.approx(cfg.recipe.lr * row.finetune_share)
    assert (cfg.data.image_size is None) == row.plans


@pytest.mark.parametrize("name", list(SPECS))
def test_a_rows_facts_decide_which_options_apply(name):
    row = SPECS[name]
    cfg = build_config({"data": {"path": "x"}, "recipe": {"name": name}})
    facts = {
        "recipe.augment.preset": row.end_to_end,
        "model.weights": row.pretrained,
        "recipe.finetune_lr": row.fine_tunes,
        "recipe.unfreeze_blocks": row.top_blocks,
        "recipe.unfreeze_from": row.named_block,
        "trainer.memory_budget": row.caches_activations,
        "recipe.time_budget": row.plans,
    }
    for path, applies in facts.items():
        assert (refusal(cfg, path, conditions=False) is None) == applies, (name, path)
        assert (name in APPLIES[path].recipes) == applies


def _recipe_name_comparisons(source: str, where: str) -> list[str]:
    """`x.recipe.name == "features"`-style tests in `source`: a recipe's fact decided by its name."""
    names = set(SPECS)
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        literals = set()
        for side in sides:
            if isinstance(side, ast.Constant) and isinstance(side.value, str):
                literals.add(side.value)
            elif isinstance(side, ast.Tuple | ast.List | ast.Set):
                literals |= {e.value for e in side.elts if isinstance(e, ast.Constant)}
        if literals & names and ("recipe" in ast.unparse(node) or "name" in ast.unparse(node)):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_name_check_sees_the_forms_it_forbids():
    source = (
        'a = cfg.recipe.name == "features"\nb = cfg.recipe.name not in ("scratch", "frozen")\nc = x == "features"\n'
    )
    source += 'd = name != "auto"\n'
    assert [hit.split(": ", 1)[1] for hit in _recipe_name_comparisons(source, "f.py")] == [
        "cfg.recipe.name == 'features'",
        "cfg.recipe.name not in ('scratch', 'frozen')",
        "name != 'auto'",
    ]


def test_no_module_decides_by_a_recipes_name():
    found = [
        hit
        for f in sorted(PACKAGE.rglob("*.py"))
        for hit in _recipe_name_comparisons(f.read_text(), str(f.relative_to(PACKAGE.parent)))
    ]
    assert not found, "read the recipe's row (recipe_specs.spec(name)) instead:\n" + "\n".join(found)


def test_a_changed_row_changes_what_config_resolves_and_refuses(monkeypatch):
    """The seam holds: config reads the row when it builds, so editing one row is all a recipe's defaults need."""
    import dataclasses

    from smallvision import recipe_specs

    row = dataclasses.replace(recipe_specs.SPECS["frozen"], epochs=3, backbone="efficientnet_lite0", pretrained=False)
    monkeypatch.setitem(recipe_specs.SPECS, "frozen", row)
    with pytest.raises(SmallvisionError, match="recipe frozen trains small_cnn or residual_cnn"):
        build_config({"data": {"path": "x"}, "recipe": {"name": "frozen"}, "model": {"backbone": "efficientnet_lite0"}})
    cfg = build_config({"data": {"path": "x"}, "recipe": {"name": "frozen"}, "model": {"backbone": "small_cnn"}})
    assert cfg.recipe.epochs == 3
