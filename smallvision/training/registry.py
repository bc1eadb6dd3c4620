"""Every recipe's run by the name users give it: training/recipes.py's five and auto's (training/auto.py).

Apart from recipes.py so that recipes never import auto, which is built from them: imports point down.
"""

from __future__ import annotations

from collections.abc import Callable


def recipe_runner(name: str) -> Callable:
    """The function that runs recipe `name`: (cfg, index, run_dir, progress, logger[, start]) -> RecipeOutcome."""
    if name == "auto":
        from smallvision.training.auto import run_auto

        return run_auto
    from smallvision.errors import SmallvisionError
    from smallvision.training.recipes import RECIPES

    if name not in RECIPES:
        raise SmallvisionError(f"recipe {name!r}: no such recipe; choose auto or one of {', '.join(RECIPES)}")
    return RECIPES[name]
