"""Every recipe's run by the name users give it: a row of recipe_specs.SPECS, run by training/recipes.py, or by
training/auto.py for the recipe that plans.

Apart from recipes.py so that recipes never import auto, which is built from them: imports point down.
"""

from __future__ import annotations

from collections.abc import Callable

from smallvision.errors import SmallvisionError
from smallvision.recipe_specs import SPECS


def recipe_runner(name: str) -> Callable:
    """The function that runs recipe `name`: (cfg, index, run_dir, progress, logger[, start]) -> RecipeOutcome."""
    if name not in SPECS:
        raise SmallvisionError(f"recipe {name!r}: no such recipe; choose one of {', '.join(SPECS)}")
    if SPECS[name].plans:
        from smallvision.training.auto import run_auto

        return run_auto
    from smallvision.training.recipes import RUNNERS

    return RUNNERS[name]
