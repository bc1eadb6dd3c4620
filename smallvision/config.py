"""Run configuration: pydantic models with clear validation errors, YAML in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smallvision.errors import SmallvisionError

SCRATCH_BACKBONES = ("small_cnn", "residual_cnn")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the images are and how splits are carved when the folder has none."""

    path: str
    image_size: int | None = Field(
        default=None,
        ge=16,
        le=1024,
        description="default: 150 scratch, else the backbone's native size (224 for efficientnet_lite0)",
    )
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    min_train_per_class: int = Field(default=1, ge=1)
    min_val_per_class: int = Field(default=1, ge=1)
    min_test_per_class: int = Field(default=1, ge=1)


class ModelConfig(_Strict):
    """Which backbone(s) and head: `backbone` joins several with '+'."""

    backbone: str | None = Field(
        default=None,
        description="default: small_cnn for scratch, efficientnet_lite0 for features, efficientnet_lite2 else",
    )
    weights: str | None = None
    pool: Literal["avg", "max", "none"] = "avg"
    dropout: float = Field(default=0.5, ge=0, lt=1)
    hidden: int | None = Field(
        default=None,
        ge=0,
        description="units of a hidden dense layer in the head; 0: none; default: 512 for small_cnn "
        "(Chollet's dense 512), else 0",
    )
    batch_norm: bool = Field(default=False, description="batch norm in small_cnn (residual_cnn always has it)")

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

    preset: Literal["none", "light", "standard"] = "light"
    rotation_range: float = Field(default=0.0, ge=0, le=180)
    width_shift_range: float = Field(default=0.0, ge=0, lt=1)
    height_shift_range: float = Field(default=0.0, ge=0, lt=1)
    shear_range: float = Field(default=0.0, ge=0, lt=90)
    zoom_range: float = Field(default=0.0, ge=0, lt=1)
    horizontal_flip: bool | None = None
    vertical_flip: bool = False
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = "nearest"


class RecipeConfig(_Strict):
    """How training goes: which recipe, which parts train, for how long, at which learning rate."""

    name: Literal["features", "scratch", "frozen", "finetune", "unfreeze", "auto"] = "auto"
    epochs: int | None = Field(default=None, ge=1, description="default: 30 features/scratch, 8 frozen")
    lr: float | None = Field(default=None, gt=0, description="default: 1e-3 (features, heads, scratch)")
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    schedule: Literal["constant", "ramp", "time", "cosine", "onecycle"] | None = Field(
        default=None,
        description="default: onecycle for the head on cached features (features, stage 1 of finetune/unfreeze/auto), "
        "cosine for end-to-end training",
    )
    warmup_epochs: float = Field(default=1.0, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    patience: int | None = Field(default=None, ge=1, description="early-stopping patience in epochs; none: off")
    unfreeze_blocks: int = Field(default=1, ge=1)
    unfreeze_from: str | None = None
    finetune_lr: float | None = Field(default=None, gt=0, description="default: a tenth of the head's lr")
    finetune_epochs: int = Field(default=6, ge=1)
    cached_views: int | None = Field(
        default=None,
        ge=0,
        description="finetune/auto: augmented views per training image whose frozen-part activations are computed "
        "once; 0: no activation cache; default 4 with augmentation, 1 (the image itself) without",
    )
    layer_decay: float = Field(default=0.7, gt=0, le=1)
    time_budget: float = Field(default=600.0, gt=0, description="seconds; `auto` fine-tunes only if it fits")
    init_from: str | None = None
    augment: AugmentConfig = AugmentConfig()

    def schedule_for(self, path: Literal["head", "network"]) -> str:
        """The schedule that runs on `path`: the asked one, else that path's default (see DEFAULT_SCHEDULE)."""
        return self.schedule or DEFAULT_SCHEDULE[path]


# The head on cached features runs one-cycle AdamW (training/head_optim.py: fast, no torch.optim import); end-to-end
# stages run cosine with warm-up.
DEFAULT_SCHEDULE = {"head": "onecycle", "network": "cosine"}


class TrainerConfig(_Strict):
    """Where and how training runs: devices, precision, data loading."""

    devices: int | None = Field(default=None, ge=1, description="default: LOCAL_WORLD_SIZE under torchrun, else 1")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        default="auto", description="auto: bf16-mixed on a GPU or a CPU with native bf16 (2x measured), else 32-true"
    )
    memory_budget: float = Field(default=4.0, gt=0, description="GB the fine-tuning activation cache may take")
    workers: int = Field(default=0, ge=0)


class RunConfig(_Strict):
    """A whole run: data, model, recipe, seed and output folder."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    recipe: RecipeConfig = RecipeConfig()
    trainer: TrainerConfig = TrainerConfig()
    seed: int = 0
    out: str | None = None


def _explain(e: ValidationError, origin: str) -> SmallvisionError:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return SmallvisionError(f"{origin}: " + "; ".join(lines))


# features is the fast recipe: lite0 (256 img/s here). The recipes that train more pick lite2 at 260 px: on
# hymenoptera finetune reached val accuracy 0.9673 with lite2, 0.9542 lite1, 0.9412 lite0 (recipe notes, this machine).
DEFAULT_BACKBONE = {"scratch": "small_cnn", "features": "efficientnet_lite0"}


def build_config(values: dict[str, Any], origin: str = "config") -> RunConfig:
    """Validate nested plain values into a RunConfig with every recipe-dependent default filled in."""
    try:
        cfg = RunConfig.model_validate(values)
    except ValidationError as e:
        raise _explain(e, origin) from e
    scratch = cfg.recipe.name == "scratch"
    names = cfg.model.backbones if cfg.model.backbone else []
    if scratch and names and any(n not in SCRATCH_BACKBONES for n in names):
        raise SmallvisionError(
            f"recipe scratch trains {' or '.join(SCRATCH_BACKBONES)}; got backbone {cfg.model.backbone!r}"
        )
    if not scratch and any(n in SCRATCH_BACKBONES for n in names):
        raise SmallvisionError(f"backbone {cfg.model.backbone!r} has no pretrained weights; use --recipe scratch")
    if cfg.model.backbone is None:
        cfg.model.backbone = DEFAULT_BACKBONE.get(cfg.recipe.name, "efficientnet_lite2")
    if cfg.model.hidden is None:
        cfg.model.hidden = 512 if cfg.model.backbones[0] == "small_cnn" else 0
    if cfg.data.image_size is None:
        from smallvision.models.weights import NATIVE_SIZE

        cfg.data.image_size = 150 if scratch else NATIVE_SIZE.get(cfg.model.backbones[0], 224)
    if cfg.recipe.epochs is None:
        cfg.recipe.epochs = {"frozen": 8, "finetune": 30, "unfreeze": 30, "auto": 30}.get(cfg.recipe.name, 30)
    if cfg.recipe.schedule is None and cfg.recipe.name in ("features", "scratch", "frozen"):
        cfg.recipe.schedule = DEFAULT_SCHEDULE["head" if cfg.recipe.name == "features" else "network"]
    if cfg.recipe.lr is None:
        cfg.recipe.lr = 1e-3
    if cfg.recipe.finetune_lr is None:
        cfg.recipe.finetune_lr = cfg.recipe.lr / 10
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into nested plain values (validated later, after overrides)."""
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
    return raw


def dump_config(config: RunConfig) -> str:
    """The fully resolved config as YAML (what `--config RUN_DIR/config.yaml` repeats)."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
