"""Every recipe's runner by the name users give it: the `runner` its row in recipe_specs.SPECS names, imported when
the recipe runs.

By name, not by import, so that the registry sits beside the recipes while `auto` (built from them, above them in
the layers) registers its runner the same way; and a run imports only its own recipe's module.
"""

from __future__ import annotations

import importlib

from smallvision.errors import SmallvisionError
from smallvision.recipe_specs import SPECS
from smallvision.recipes.base import Recipe


def recipe_runner(name: str) -> Recipe:
    """The function that runs recipe `name`: (cfg, index, run_dir, progress, logger[, start]) -> RecipeOutcome."""
    if name not in SPECS:
        raise SmallvisionError(f"recipe {name!r}: no such recipe; choose one of {', '.join(SPECS)}")
    module, function = SPECS[name].runner.split(":")
    return getattr(importlib.import_module(module), function)
