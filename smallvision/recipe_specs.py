"""Every fact about a recipe in one row: config's defaults and refusals, the report and the api read it here.

Adding a recipe is one row here and its module in recipes/ (the row names its runner; recipes/registry.py imports
it by that name); no module decides by comparing a recipe's name (tests/test_recipe_specs.py checks the tree).
Plain data below config in the layers (config reads it), so it imports nothing of smallvision's.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SCRATCH_SIZE = 32  # the smallest native size a from-scratch CNN trains at (auto and scratch alike)


@dataclass(frozen=True)
class RecipeSpec:
    """What one recipe trains and which defaults and options follow from that."""

    name: str
    summary: str  # what trains, in the words of the recipe table (the manual's recipes page)
    runner: str  # "module:function" that runs it (a recipes.base.Recipe), imported only when the recipe runs
    pretrained: bool  # starts from pretrained weights (else small_cnn/residual_cnn from random init)
    end_to_end: bool  # images run through the network while training, so augmentation and loaders apply
    stages: tuple[str, ...]  # the schedule path of each stage: "head" on cached features, "network" end to end
    fine_tunes: bool = False  # a second stage trains backbone blocks at finetune_lr
    top_blocks: bool = False  # that stage unfreezes the top --unfreeze-blocks block groups
    named_block: bool = False  # ... or every group from --unfreeze-from up
    caches_activations: bool = False  # trains blocks above a frozen part, so the activation cache exists
    plans: bool = False  # chooses its backbones, size and stages from the data within --time-budget
    backbone: str | None = "efficientnet_lite2"  # the default backbone (None: chosen by the plan)
    image_size: int | None = None  # the default input size (None: the backbone's native size, or the plan's)
    epochs: int = 30  # the default epochs of the first stage
    finetune_share: float = 0.1  # the fine-tuning stage's default rate, as a share of --lr
    gradcam: bool = True  # the report draws Grad-CAM (a pretrained timm backbone trained end to end)


# auto's fine-tuning rounds start at 3e-4: at 1e-4 (a tenth, the finetune recipe's default) food5_64px's rounds were
# still improving at their last epoch (val 0.7684 after 2 rounds), at 3e-4 they reached 0.7888 on the same cached views.
AUTO_FINETUNE_SHARE = 0.3

# features is the fast recipe: lite0 (256 img/s here). The recipes that train more pick lite2 at 260 px: on
# hymenoptera finetune reached val accuracy 0.9673 with lite2, 0.9542 lite1, 0.9412 lite0 (recipe notes, this machine).
SPECS: dict[str, RecipeSpec] = {
    s.name: s
    for s in (
        RecipeSpec(
            "features",
            "the pretrained backbone runs once per image (features cached on disk, keyed by content); only a dense "
            "head trains",
            runner="smallvision.recipes.features:run_features",
            pretrained=True,
            end_to_end=False,
            stages=("head",),
            backbone="efficientnet_lite0",
            gradcam=False,
        ),
        RecipeSpec(
            "scratch",
            "a small CNN from random init: `small_cnn` (Chollet's Conv 32-64-128-128 + dense 512) or `residual_cnn`; "
            "`--augment`, `--dropout`, `--batch-norm`, `--weight-decay`",
            runner="smallvision.recipes.scratch:run_scratch",
            pretrained=False,
            end_to_end=True,
            stages=("network",),
            backbone="small_cnn",
            image_size=150,
            gradcam=False,
        ),
        RecipeSpec(
            "frozen",
            "frozen pretrained backbone (BatchNorm statistics frozen too) + head trained with augmentation, on cached "
            "activations",
            runner="smallvision.recipes.frozen:run_frozen",
            pretrained=True,
            end_to_end=True,
            stages=("network",),
            caches_activations=True,
            epochs=8,
        ),
        RecipeSpec(
            "finetune",
            "stage 1 `features`; stage 2 unfreezes the top `--unfreeze-blocks N` (or `--unfreeze-from BLOCK`) at "
            "`--finetune-lr` (default a tenth), lower blocks at geometrically lower rates, on cached activations",
            runner="smallvision.recipes.finetune:run_finetune",
            pretrained=True,
            end_to_end=True,
            stages=("head", "network"),
            fine_tunes=True,
            top_blocks=True,
            named_block=True,
            caches_activations=True,
        ),
        RecipeSpec(
            "unfreeze",
            "stage 1 `features`; stage 2 the whole network at a low learning rate",
            runner="smallvision.recipes.finetune:run_unfreeze",
            pretrained=True,
            end_to_end=True,
            stages=("head", "network"),
            fine_tunes=True,
        ),
        RecipeSpec(
            "auto",
            "reads the data, plans candidates, fine-tuning rounds and test-time augmentation within `--time-budget` up "
            "front, keeps on validation what beats the rest; see below",
            runner="smallvision.auto.execute:run_auto",
            pretrained=True,
            end_to_end=True,
            stages=("head", "network"),
            fine_tunes=True,
            top_blocks=True,
            caches_activations=True,
            plans=True,
            backbone=None,
            finetune_share=AUTO_FINETUNE_SHARE,
        ),
    )
}
DEFAULT_RECIPE = "auto"


def in_table_order() -> list[RecipeSpec]:
    """The rows as users meet them: the default recipe first."""
    return [SPECS[DEFAULT_RECIPE], *(s for s in SPECS.values() if s.name != DEFAULT_RECIPE)]


def recipes_table() -> str:
    """The manual's recipe table, generated from the rows (tests/test_options.py holds docs/recipes.md to it)."""
    rows = ["| recipe | default backbone | what trains |", "|---|---|---|"]
    for s in in_table_order():
        name = f"`{s.name}`" + (" (default)" if s.name == DEFAULT_RECIPE else "")
        rows.append(f"| {name} | {s.backbone or 'chosen from the data'} | {s.summary} |")
    return "\n".join(rows) + "\n"


def spec(name: str) -> RecipeSpec:
    """The row of recipe `name` (config has validated the name by now)."""
    return SPECS[name]


def recipes_where(fact: str) -> tuple[str, ...]:
    """The recipes whose row has `fact` true, in the rows' order."""
    return tuple(name for name, row in SPECS.items() if getattr(row, fact))


def in_words(names: tuple[str, ...] | list[str], last: str = "and") -> str:
    """Recipe names as a sentence lists them: 'finetune, unfreeze and auto' (or, with `last`, '... or auto')."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {last} " + names[-1]
