"""Run configuration: pydantic models with clear validation errors, YAML in and out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smallvision.errors import SmallvisionError
from smallvision.recipe_specs import DEFAULT_RECIPE, SPECS, RecipeSpec, in_table_order, in_words, recipes_where, spec

SCRATCH_BACKBONES = ("small_cnn", "residual_cnn")
# The size each bundled Lite backbone was trained at on ImageNet: a run's default image size (the config sits below
# models, so the fact lives here, where the default is resolved).
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
LR = 1e-3
RECIPES = tuple(SPECS)


def _epochs_help() -> str:
    """The epochs default of each recipe, from their rows: the rows' own default last."""
    odd = [f"{s.epochs} for {s.name}" for s in SPECS.values() if s.epochs != RecipeSpec.epochs]
    return ", ".join([*odd, f"else {RecipeSpec.epochs}"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the images are and how splits are carved when the folder has none."""

    path: str = Field(description="folder of class folders (or train/ val/ test/), or a .zip")
    image_size: int | None = Field(
        default=None,
        ge=16,
        le=1024,
        description="square input size in pixels; default: "
        + f"{in_words(recipes_where('plans'))} chooses it from the data (see its plan), "
        + "".join(
            f"{r.image_size} for {r.name} (the images' median short side when smaller), "
            for r in SPECS.values()
            if r.image_size
        )
        + "else the first backbone's native size "
        f"({NATIVE_SIZE['efficientnet_lite0']} for efficientnet_lite0, the features default; "
        f"{NATIVE_SIZE['efficientnet_lite2']} for efficientnet_lite2, the other recipes' default; 224 for other "
        "timm backbones)",
    )
    val_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="share of each class carved from train for validation when there is no val/",
    )
    test_fraction: float = Field(
        default=0.0, ge=0, lt=1, description="share of each class carved for a test split from a single folder"
    )
    min_train_per_class: int = Field(
        default=1, ge=1, description="fewest training images a class may keep after carving (fewer is an error)"
    )
    min_val_per_class: int = Field(default=1, ge=1, description="fewest validation images carved per class")
    min_test_per_class: int = Field(default=1, ge=1, description="fewest test images carved per class")
    labels: str | None = Field(
        default=None,
        description="labels file beside the images (filename,labels with the labels separated by spaces, or "
        "filename,<label>,... of 0/1); default: the folder's labels.csv when it has one, else class folders",
    )
    task: Literal["auto", "single", "multi"] = Field(
        default="auto",
        description="single: one class per image; multi: any number of labels per image (a labels file); auto: "
        "multi when a labels file gives any image other than one label",
    )


class ModelConfig(_Strict):
    """Which backbone(s) and head: `backbone` joins several with '+'."""

    backbone: str | None = Field(
        default=None,
        description="timm backbone (join several with '+'), or small_cnn/residual_cnn for scratch; default: auto "
        "chooses among small_cnn and efficientnet_lite0/1/2 from the data, small_cnn for scratch, efficientnet_lite0 "
        "for features, efficientnet_lite2 for the others",
    )
    weights: str | None = Field(
        default=None,
        description="local weights file (.safetensors/.pth), 'hub' or 'random'; default: the bundled weights, else "
        "timm's cached or hub weights",
    )
    pool: Literal["avg", "max", "none"] = Field(default="avg", description="backbone pooling: avg, max or none")
    dropout: float = Field(default=0.5, ge=0, lt=1, description="dropout before the head's dense layer(s)")
    hidden: int | None = Field(
        default=None,
        ge=0,
        description="units of a hidden dense layer in the head; 0: none; default: 512 for small_cnn "
        "(Chollet's dense 512), else 0",
    )
    batch_norm: bool = Field(
        default=False, description="batch norm in small_cnn's conv layers (residual_cnn always has it)"
    )

    @field_validator("backbone")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split("+")]
        if not all(parts):
            raise ValueError("backbone names joined with '+' must not be empty, e.g. efficientnet_lite0+resnet50")
        return "+".join(parts)

    @property
    def backbones(self) -> list[str]:
        """The backbone names, in order."""
        return (self.backbone or "").split("+")


class AugmentConfig(_Strict):
    """Training-time augmentation: a preset plus Keras ImageDataGenerator-style parameters."""

    preset: Literal["none", "light", "standard"] = Field(
        default="light",
        description="augmentation preset: none; light (random resized crop of 70-100%, flips); standard (crop of "
        "40-100%, rotation up to 10 degrees, colour jitter, flips)",
    )
    rotation_range: float = Field(default=0.0, ge=0, le=180, description="Keras-style: random rotation in degrees")
    width_shift_range: float = Field(
        default=0.0, ge=0, lt=1, description="Keras-style: random horizontal shift, fraction of the width"
    )
    height_shift_range: float = Field(
        default=0.0, ge=0, lt=1, description="Keras-style: random vertical shift, fraction of the height"
    )
    shear_range: float = Field(default=0.0, ge=0, lt=90, description="Keras-style: random shear in degrees")
    zoom_range: float = Field(default=0.0, ge=0, lt=1, description="Keras-style: random zoom in [1-z, 1+z]")
    horizontal_flip: bool | None = Field(
        default=None, description="random horizontal flips; default: on, unless the preset is none"
    )
    vertical_flip: bool = Field(default=False, description="random vertical flips")
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = Field(
        default="nearest",
        description="Keras-style: how rotation, shifts, shear and zoom fill the borders: nearest, constant, reflect "
        "or wrap",
    )

    def affine(self) -> bool:
        """Whether any Keras-style rotation, shift, shear or zoom is asked (they share one RandomAffine)."""
        return any(
            (self.rotation_range, self.width_shift_range, self.height_shift_range, self.shear_range, self.zoom_range)
        )

    def augments(self) -> bool:
        """Whether training images are changed at all (data/transforms.py train_transform adds a step)."""
        flip = self.horizontal_flip if self.horizontal_flip is not None else self.preset != "none"
        return self.preset != "none" or self.affine() or flip or self.vertical_flip


class RecipeConfig(_Strict):
    """How training goes: which recipe, which parts train, for how long, at which learning rate."""

    name: Literal[RECIPES] = Field(  # type: ignore[valid-type]  # the names of recipe_specs.SPECS
        default=DEFAULT_RECIPE,
        description="the recipe: " + in_words([s.name for s in in_table_order()], "or"),
    )
    epochs: int | None = Field(
        default=None,
        ge=1,
        description=f"epochs (of the head stage for {in_words(recipes_where('fine_tunes'))}); default: "
        + _epochs_help(),
    )
    lr: float | None = Field(
        default=None, gt=0, description=f"learning rate of the head (scratch: the whole network); default: {LR:g}"
    )
    batch_size: int = Field(default=32, ge=1, description="batch size")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        default="adamw", description="adamw, adam, sgd or rmsprop"
    )
    momentum: float = Field(default=0.9, ge=0, lt=1, description="momentum of sgd and rmsprop")
    schedule: Literal["constant", "ramp", "time", "cosine", "onecycle"] | None = Field(
        default=None,
        description="learning-rate schedule: constant, ramp, time, cosine or onecycle; default: onecycle for the head "
        "on cached features (features, stage 1 of finetune/unfreeze/auto), cosine for end-to-end training",
    )
    warmup_epochs: float = Field(
        default=1.0, ge=0, description="epochs of linear warm-up (cosine) or at the full rate before decay (ramp)"
    )
    weight_decay: float = Field(default=1e-4, ge=0, description="weight decay (decoupled for adamw)")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="label smoothing of the loss")
    loss: Literal["bce", "asl"] | None = Field(
        default=None,
        description="multi-label loss: bce (binary cross-entropy) or asl (timm's asymmetric loss, Ridnik et al. "
        "2021: easy negatives weigh less); default: bce, and auto measures both on validation for its heads on "
        "cached features; single-label runs use cross-entropy",
    )
    class_weights: Literal["none", "balanced"] = Field(
        default="none", description="none, or balanced: loss weights inversely proportional to class frequency"
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        description="early stopping: stop after this many epochs without a better validation accuracy (the best "
        "epoch is kept); default: off",
    )
    unfreeze_blocks: int = Field(default=1, ge=1, description="how many top block groups fine-tuning trains")
    unfreeze_from: str | None = Field(
        default=None,
        description="fine-tune from this block group up (names: smallvision inspect); default: --unfreeze-blocks",
    )
    finetune_lr: float | None = Field(
        default=None,
        gt=0,
        description="learning rate of the fine-tuning stage; default: a tenth of --lr (auto: three tenths, its first "
        "round's rate, halved and quartered in later rounds)",
    )
    finetune_epochs: int = Field(default=6, ge=1, description="epochs of the fine-tuning stage")
    cached_views: int | None = Field(
        default=None,
        ge=0,
        description="augmented views per training image whose frozen-part activations are computed once; 0: no "
        "activation cache; default: 4 with augmentation, 1 (the image itself) without",
    )
    layer_decay: float = Field(
        default=0.7, gt=0, le=1, description="each lower unfrozen block trains at this times the rate above it"
    )
    time_budget: float = Field(
        default=600.0,
        gt=0,
        description="seconds the whole run may take; auto plans its candidates, fine-tuning rounds and test-time "
        "augmentation to fit it, from throughput measured on warm-up batches",
    )
    init_from: str | None = Field(
        default=None,
        description="start from a saved model folder (tensors whose name and shape fit are kept; features, finetune, "
        "unfreeze and auto take its head, their backbone starts pretrained); default: none",
    )
    augment: AugmentConfig = AugmentConfig()

    def schedule_for(self, path: Literal["head", "network"]) -> str:
        """The schedule that runs on `path`: the asked one, else that path's default (see DEFAULT_SCHEDULE)."""
        return self.schedule or DEFAULT_SCHEDULE[path]


# The head on cached features runs one-cycle AdamW (engine/head_optim.py: fast, no torch.optim import); end-to-end
# stages run cosine with warm-up.
DEFAULT_SCHEDULE = {"head": "onecycle", "network": "cosine"}


class TrainerConfig(_Strict):
    """Where and how training runs: devices, precision, data loading."""

    devices: int | None = Field(
        default=None, ge=1, description="processes/devices (DDP); default: LOCAL_WORLD_SIZE under torchrun, else 1"
    )
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        default="auto",
        description="auto, 32-true, bf16-mixed or 16-mixed (GPU only); auto: bf16-mixed on a GPU or a CPU with "
        "native bf16 (2x measured), else 32-true; the feature pass runs at it too (auto: fp16 on a GPU), the head on "
        "cached features trains in fp32",
    )
    memory_budget: float = Field(default=4.0, gt=0, description="GB the activation cache may take")
    workers: int = Field(default=0, ge=0, description="DataLoader worker processes that load and augment images")
    logger: Literal["none", "tensorboard", "mlflow"] = Field(
        default="none",
        description="experiment tracker that also logs every stage's per-epoch metrics, the hyperparameters and the "
        "final metrics under the run folder: none, tensorboard (RUN/tensorboard) or mlflow (local file store "
        "RUN/mlruns; pip install 'smallvision[trackers]'); history.csv is written either way",
    )


class RunConfig(_Strict):
    """A whole run: data, model, recipe, seed and output folder."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    recipe: RecipeConfig = RecipeConfig()
    trainer: TrainerConfig = TrainerConfig()
    seed: int = Field(default=0, description="random seed (splits, init, shuffling, augmentation)")
    out: str | None = Field(default=None, description="run folder; default: runs/<data>-<recipe>, numbered if taken")


def _explain(e: ValidationError, origin: str) -> SmallvisionError:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return SmallvisionError(f"{origin}: " + "; ".join(lines))


# ---------------------------------------------------------------- which recipe applies which option
# The groups come from the recipes' rows (recipe_specs.py); the reasons name the recipes each group leaves out.

PRETRAINED = recipes_where("pretrained")
END_TO_END = recipes_where("end_to_end")  # images run through the network while training
TWO_STAGE = recipes_where("fine_tunes")
TOP_BLOCKS = recipes_where("top_blocks")
NAMED_BLOCK = recipes_where("named_block")
CACHING = recipes_where("caches_activations")  # train blocks above a frozen part: the activation cache exists here
PLANNING = recipes_where("plans")


def _outside(group: tuple[str, ...], among: tuple[str, ...] = RECIPES) -> tuple[str, ...]:
    """The recipes of `among` that are not in `group`."""
    return tuple(r for r in among if r not in group)


def _others(group: tuple[str, ...]) -> str:
    """The recipes outside `group`, in words."""
    return in_words(_outside(group))


@dataclass(frozen=True)
class Applies:
    """The recipes that apply a config field; `why` says why the others cannot."""

    recipes: tuple[str, ...]
    why: str = ""


_NO_CACHE = (
    f"it sizes the activation cache of frozen layers below trainable blocks, which only {in_words(CACHING)} have "
    f"({_others(CACHING)} cache no activations: whole-backbone features, or nothing frozen)"
)
_NO_AUGMENT = f"{_others(END_TO_END)} computes each image's features once, from the unaugmented image"
_NO_FINETUNE = f"only {in_words(TWO_STAGE)} have a fine-tuning stage"
_ONE_PROCESS = f"{_others(END_TO_END)} trains its head on cached features in one process"

# Every field of RunConfig and its sections, by dotted path (tests/test_options.py holds the list complete and proves
# each entry: the field changes the run on the recipes named here and is refused on the others).
APPLIES: dict[str, Applies] = {
    "data.path": Applies(RECIPES),
    "data.image_size": Applies(RECIPES),
    "data.val_fraction": Applies(RECIPES),
    "data.test_fraction": Applies(RECIPES),
    "data.min_train_per_class": Applies(RECIPES),
    "data.min_val_per_class": Applies(RECIPES),
    "data.min_test_per_class": Applies(RECIPES),
    "data.labels": Applies(RECIPES),
    "data.task": Applies(RECIPES),
    "model.backbone": Applies(RECIPES),
    "model.weights": Applies(
        PRETRAINED,
        f"{_others(PRETRAINED)} trains small_cnn/residual_cnn from random init (--init-from starts from a saved model)",
    ),
    "model.pool": Applies(
        PRETRAINED, f"{_others(PRETRAINED)} networks pool their own way (small_cnn flattens, residual_cnn averages)"
    ),
    "model.dropout": Applies(RECIPES),
    "model.hidden": Applies(RECIPES),
    "model.batch_norm": Applies(
        _outside(PRETRAINED),
        "it builds small_cnn's conv layers; pretrained backbones keep their own normalization",
    ),
    "recipe.name": Applies(RECIPES),
    "recipe.epochs": Applies(RECIPES),
    "recipe.lr": Applies(RECIPES),
    "recipe.batch_size": Applies(RECIPES),
    "recipe.optimizer": Applies(RECIPES),
    "recipe.momentum": Applies(RECIPES),
    "recipe.schedule": Applies(RECIPES),
    "recipe.warmup_epochs": Applies(RECIPES),
    "recipe.weight_decay": Applies(RECIPES),
    "recipe.label_smoothing": Applies(RECIPES),
    "recipe.loss": Applies(RECIPES),
    "recipe.class_weights": Applies(RECIPES),
    "recipe.patience": Applies(RECIPES),
    "recipe.unfreeze_blocks": Applies(
        TOP_BLOCKS,
        f"only {in_words(TOP_BLOCKS)} unfreeze top blocks "
        f"({in_words(_outside(TOP_BLOCKS, TWO_STAGE))} trains every block, the others none)",
    ),
    "recipe.unfreeze_from": Applies(
        NAMED_BLOCK,
        f"only {in_words(NAMED_BLOCK)} unfreezes from a named block ({in_words(PLANNING)} plans its rounds' blocks; "
        "--unfreeze-blocks sets its first round)",
    ),
    "recipe.finetune_lr": Applies(TWO_STAGE, _NO_FINETUNE),
    "recipe.finetune_epochs": Applies(TWO_STAGE, _NO_FINETUNE),
    "recipe.cached_views": Applies(CACHING, _NO_CACHE),
    "recipe.layer_decay": Applies(TWO_STAGE, f"only {in_words(TWO_STAGE)} train backbone blocks at their own lr"),
    "recipe.time_budget": Applies(PLANNING, f"only {in_words(PLANNING)} decides by time whether to fine-tune"),
    "recipe.init_from": Applies(RECIPES),
    "recipe.augment.preset": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.rotation_range": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.width_shift_range": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.height_shift_range": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.shear_range": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.zoom_range": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.horizontal_flip": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.vertical_flip": Applies(END_TO_END, _NO_AUGMENT),
    "recipe.augment.fill_mode": Applies(END_TO_END, _NO_AUGMENT),
    "trainer.devices": Applies(END_TO_END, _ONE_PROCESS),
    "trainer.precision": Applies(RECIPES),
    "trainer.memory_budget": Applies(CACHING, _NO_CACHE),
    "trainer.workers": Applies(
        END_TO_END, f"{_others(END_TO_END)} trains on in-memory cached features; no DataLoader loads images"
    ),
    "trainer.logger": Applies(RECIPES),
    "seed": Applies(RECIPES),
    "out": Applies(RECIPES),
}

# Command-line spellings that are not `--` + the field name with dashes.
FLAGS = {"data.path": "DATA", "recipe.name": "--recipe", "recipe.augment.preset": "--augment"}


def option_flag(path: str) -> str:
    """The command-line spelling of the config field at dotted `path`."""
    return FLAGS.get(path, "--" + path.rpartition(".")[2].replace("_", "-"))


# The --help panels of the options, in the order they are shown (timm's train.py groups its arguments the same way):
# a field goes to its config section's panel unless PANEL_OF names it.
PANELS = ("Data", "Model", "Training", "Augmentation", "Fine-tuning", "Run and devices")
SECTION_PANELS = {"data": "Data", "model": "Model", "recipe": "Training", "recipe.augment": "Augmentation"}
FINE_TUNING = ("unfreeze_blocks", "unfreeze_from", "finetune_lr", "finetune_epochs", "layer_decay", "cached_views")
PANEL_OF = {"recipe.init_from": "Model", **{f"recipe.{name}": "Fine-tuning" for name in FINE_TUNING}}


def option_panel(path: str) -> str:
    """The --help panel of the config field at dotted `path` (trainer fields, seed and out: 'Run and devices')."""
    return PANEL_OF.get(path) or SECTION_PANELS.get(path.rpartition(".")[0], PANELS[-1])


def field_help(path: str) -> str:
    """The help text of the config field at dotted `path`: its description, which always states its default."""
    info = leaf_fields()[path]
    text = info.description
    if info.is_required():
        return f"{text} (required)"
    if "default:" in text:
        return text
    default = info.default
    shown = ("on" if default else "off") if isinstance(default, bool) else default
    return f"{text}; default: {shown}"


def options_table() -> str:
    """The manual's option table, generated from the fields (tests/test_options.py holds docs/options.md to it)."""
    rows = ["| option | config key | what it does (default) | recipes that apply it |", "|---|---|---|---|"]
    for path, applies in APPLIES.items():
        recipes = "all" if applies.recipes == RECIPES else ", ".join(applies.recipes)
        rows.append(f"| `{option_flag(path)}` | `{path}` | {field_help(path).replace('|', '/')} | {recipes} |")
    return "\n".join(rows) + "\n"


def leaf_fields(model: type[BaseModel] = None, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of RunConfig (or `model`), by dotted path: its pydantic FieldInfo."""
    model = model or RunConfig
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.update(leaf_fields(kind, f"{prefix}{name}."))
        else:
            out[prefix + name] = info
    return out


def user_set(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """The fields given a value (not None) in the values `model` was validated from, by dotted path."""
    out: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(user_set(value, f"{prefix}{name}."))
        elif value is not None:
            out[prefix + name] = value
    return out


def _schedules(cfg: RunConfig) -> set[str]:
    """The schedules the recipe's stages run."""
    return {cfg.recipe.schedule_for(p) for p in spec(cfg.recipe.name).stages}


def _momentum(cfg: RunConfig) -> str | None:
    r = cfg.recipe
    if r.optimizer not in ("sgd", "rmsprop"):
        return f"momentum is a parameter of sgd and rmsprop, not of --optimizer {r.optimizer}"
    if _schedules(cfg) == {"onecycle"}:
        return "the onecycle schedule cycles the momentum itself (0.95 -> 0.85 -> 0.95)"
    return None


def _warmup(cfg: RunConfig) -> str | None:
    runs = _schedules(cfg)
    if not runs & {"cosine", "ramp"}:
        return f"only the cosine and ramp schedules warm up; this run uses {', '.join(sorted(runs))}"
    return None


def _patience(cfg: RunConfig) -> str | None:
    r = cfg.recipe
    longest = max([r.epochs] + ([r.finetune_epochs] if r.name in TWO_STAGE else []))
    if r.patience >= longest:
        return f"early stopping after {r.patience} epochs without progress needs stages longer than that ({longest})"
    return None


def _views(cfg: RunConfig) -> str | None:
    if cfg.recipe.cached_views > 1 and not cfg.recipe.augment.augments():
        return "without augmentation each image has one view, the image itself"
    return None


def _cache_off(cfg: RunConfig) -> str | None:
    return "--cached-views 0 turns the activation cache off" if cfg.recipe.cached_views == 0 else None


def _workers(cfg: RunConfig) -> str | None:
    if cfg.recipe.name in CACHING and cfg.recipe.cached_views != 0:
        return (
            "batches come from the in-memory activation cache, not from image-loading workers "
            "(--cached-views 0 trains on images, with workers)"
        )
    return None


def _blocks(cfg: RunConfig) -> str | None:
    return "--unfreeze-from chooses the blocks" if cfg.recipe.unfreeze_from is not None else None


def _decay(cfg: RunConfig) -> str | None:
    r = cfg.recipe
    if spec(r.name).top_blocks and not spec(r.name).plans and r.unfreeze_from is None and r.unfreeze_blocks == 1:
        return "with one unfrozen block (--unfreeze-blocks 1) there is no lower block for the decay to slow"
    return None


def _fill(cfg: RunConfig) -> str | None:
    if not cfg.recipe.augment.affine():
        return "it fills the borders that rotation, shifts, shear or zoom leave, and none of them is set"
    return None


def _batch_norm(cfg: RunConfig) -> str | None:
    return "residual_cnn always has batch norm" if cfg.model.backbone == "residual_cnn" else None


def _backbone(cfg: RunConfig) -> str | None:
    if not spec(cfg.recipe.name).pretrained and len(cfg.model.backbones) > 1:
        return f"{cfg.recipe.name} trains one network; joined backbones need pretrained weights"
    return None


def _precision(cfg: RunConfig) -> str | None:
    if cfg.trainer.precision == "16-mixed":
        import torch

        if not torch.cuda.is_available():
            return "fp16 mixed precision needs a GPU and none is available (on a CPU use bf16-mixed or 32-true)"
    return None


# Conditions under which a field that its recipe applies would still change nothing: a reason, or None.
CONDITIONS: dict[str, Callable[[RunConfig], str | None]] = {
    "model.backbone": _backbone,
    "model.batch_norm": _batch_norm,
    "recipe.momentum": _momentum,
    "recipe.warmup_epochs": _warmup,
    "recipe.patience": _patience,
    "recipe.cached_views": _views,
    "recipe.unfreeze_blocks": _blocks,
    "recipe.layer_decay": _decay,
    "recipe.augment.fill_mode": _fill,
    "trainer.memory_budget": _cache_off,
    "trainer.workers": _workers,
    "trainer.precision": _precision,
}


def _resolve(section: BaseModel, name: str, value: Any) -> None:
    """Fill a default the code chose; model_fields_set keeps meaning 'what the user set'."""
    setattr(section, name, value)
    section.model_fields_set.discard(name)


def build_config(values: dict[str, Any], origin: str = "config", conditions: bool = True) -> RunConfig:
    """Validate nested plain values into a RunConfig with every recipe-dependent default filled in.

    An option the user set that the chosen recipe cannot apply (APPLIES, CONDITIONS) is refused, never ignored.
    `conditions=False` builds one step of a run whose options were checked against its own recipe already (auto's
    candidates: an option auto applies in one step changes nothing in another).
    """
    try:
        cfg = RunConfig.model_validate(values)
    except ValidationError as e:
        raise _explain(e, origin) from e
    given = user_set(cfg)
    name = cfg.recipe.name
    _check_backbones(cfg)
    _fill_defaults(cfg, spec(name))
    for path in given:
        reason = refusal(cfg, path, conditions)
        if reason:
            raise SmallvisionError(f"option {option_flag(path)} ({path}) does not apply to recipe {name}: {reason}")
    return cfg


def _check_backbones(cfg: RunConfig) -> None:
    """Refuse a backbone the recipe cannot train: random-init networks for pretrained recipes, and the reverse."""
    name, names = cfg.recipe.name, (cfg.model.backbones if cfg.model.backbone else [])
    if not spec(name).pretrained and names and any(n not in SCRATCH_BACKBONES for n in names):
        raise SmallvisionError(
            f"recipe {name} trains {' or '.join(SCRATCH_BACKBONES)}; got backbone {cfg.model.backbone!r}"
        )
    if spec(name).pretrained and any(n in SCRATCH_BACKBONES for n in names):
        scratch = _others(PRETRAINED)
        raise SmallvisionError(f"backbone {cfg.model.backbone!r} has no pretrained weights; use --recipe {scratch}")


def _fill_defaults(cfg: RunConfig, row: RecipeSpec) -> None:
    """The defaults that depend on the recipe, from its row (a planning recipe chooses backbone and size itself)."""
    m, r = cfg.model, cfg.recipe
    if m.backbone is None and row.backbone is not None:
        _resolve(m, "backbone", row.backbone)
    if m.hidden is None:
        _resolve(m, "hidden", 512 if m.backbones[0] == "small_cnn" else 0)
    if cfg.data.image_size is None and not row.plans:
        _resolve(cfg.data, "image_size", row.image_size or NATIVE_SIZE.get(m.backbones[0], 224))
    if r.epochs is None:
        _resolve(r, "epochs", row.epochs)
    if r.schedule is None and len(row.stages) == 1:
        _resolve(r, "schedule", DEFAULT_SCHEDULE[row.stages[0]])
    if r.lr is None:
        _resolve(r, "lr", LR)
    if r.finetune_lr is None and row.fine_tunes:
        _resolve(r, "finetune_lr", r.lr * row.finetune_share)


def refusal(cfg: RunConfig, path: str, conditions: bool = True) -> str | None:
    """Why `cfg`'s recipe cannot apply the field at `path` (APPLIES, then CONDITIONS), or None when it applies it:
    the one rule behind refusing an option up front and naming, after an auto run, what no stage that ran applied."""
    applies = APPLIES[path]
    if cfg.recipe.name not in applies.recipes:
        return applies.why or f"only {', '.join(applies.recipes)} apply it"
    return CONDITIONS[path](cfg) if conditions and path in CONDITIONS else None


def unapplied(given: dict[str, Any], stages: list[RunConfig]) -> list[str]:
    """The dotted paths in `given` (the options a user set), in APPLIES order, that no stage of `stages` applied: a
    stage applies one when its recipe applies it (`refusal`) and it ran with the user's value; options only `auto`
    itself reads are applied by its plan."""
    out = []
    for path, value in sorted(given.items(), key=lambda kv: list(APPLIES).index(kv[0])):  # the options' own order
        if path == "recipe.name" or APPLIES[path].recipes == PLANNING:  # auto itself read them: its plan ran
            continue
        ran = any(refusal(cfg, path) is None and _value(cfg, path) == value for cfg in stages)
        if not ran:
            out.append(path)
    return out


def _value(cfg: BaseModel, path: str) -> Any:
    """The value of the field at dotted `path`."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def stage_values(cfg: RunConfig) -> dict[str, Any]:
    """The resolved value of every field `cfg`'s recipe applies (APPLIES), by dotted path, as YAML writes it."""
    dumped = cfg.model_dump(mode="json")
    return {path: _value_in(dumped, path) for path in APPLIES if refusal(cfg, path, conditions=False) is None}


def _value_in(values: dict, path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted paths and their values as nested sections (what RunConfig validates and YAML shows)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        section = out
        *parents, leaf = path.split(".")
        for p in parents:
            section = section.setdefault(p, {})
        section[leaf] = value
    return out


RESOLVED_KEY = "resolved"


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into nested plain values (validated later, after overrides).

    A run's `resolved` section (every value it ran with, kept for people to read) is ignored: defaults are resolved
    again from the values that were set, so any flag or recipe can override a saved config.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SmallvisionError(f"{path}: cannot read config ({e.strerror or e})") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SmallvisionError(f"{path}: not valid YAML ({e})") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SmallvisionError(
            f"{path}: expected a mapping of sections (data, model, recipe), got {type(raw).__name__}"
        )
    raw.pop(RESOLVED_KEY, None)
    return raw


def read_resolved(path: str | Path) -> dict[str, Any]:
    """A run's config.yaml `resolved:` section: every value the run used, as the file shows it."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))[RESOLVED_KEY]


def dump_config(values: dict[str, Any], resolved: RunConfig | dict[str, Any]) -> str:
    """A run's config.yaml: the values that were set (what `--config` repeats), then every resolved value to read
    (`auto`'s, once it ran: the values common to its candidates, then each candidate's own; auto/execute.py)."""
    import yaml

    try:
        user = RunConfig.model_validate(values).model_dump(mode="json", exclude_unset=True)
    except ValidationError as e:
        raise _explain(e, "config") from e
    header = (
        "# What this run was given. `smallvision train --config THIS_FILE` repeats it: defaults are filled in when\n"
        "# it is loaded, and any flag (--recipe, --out, ...) overrides it.\n"
    )
    note = (
        f"# {RESOLVED_KEY}: every value this run used, defaults included. For reading only: loading this file\n"
        "# ignores it.\n"
    )
    return (
        header
        + yaml.safe_dump(user, sort_keys=False)
        + note
        + yaml.safe_dump(
            {RESOLVED_KEY: resolved if isinstance(resolved, dict) else resolved.model_dump(mode="json")},
            sort_keys=False,
        )
    )
