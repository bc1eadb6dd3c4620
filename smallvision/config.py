"""Run configuration: pydantic models with clear validation errors, YAML in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smallvision.errors import SmallvisionError

RECIPES = ("features",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the images are and how splits are carved when the folder has none."""

    path: str
    image_size: int = Field(default=224, ge=16, le=1024)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    min_train_per_class: int = Field(default=1, ge=1)
    min_val_per_class: int = Field(default=1, ge=1)
    min_test_per_class: int = Field(default=1, ge=1)


class ModelConfig(_Strict):
    """Which backbone(s) and head: `backbone` joins several with '+'."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pool: Literal["avg", "max", "none"] = "avg"
    dropout: float = Field(default=0.5, ge=0, lt=1)
    hidden: int = Field(default=0, ge=0)

    @field_validator("backbone")
    @classmethod
    def _names(cls, v: str) -> str:
        parts = [p.strip() for p in v.split("+")]
        if not all(parts):
            raise ValueError("backbone names joined with '+' must not be empty, e.g. efficientnet_lite0+resnet50")
        return "+".join(parts)

    @property
    def backbones(self) -> list[str]:
        """The backbone names, in order."""
        return self.backbone.split("+")


class RecipeConfig(_Strict):
    """How training goes: which recipe, for how long, at which learning rate."""

    name: Literal["features"] = "features"
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


class RunConfig(_Strict):
    """A whole run: data, model, recipe, seed and output folder."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    recipe: RecipeConfig = RecipeConfig()
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


def build_config(values: dict[str, Any], origin: str = "config") -> RunConfig:
    """Validate nested plain values into a RunConfig; errors name each bad key."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as e:
        raise _explain(e, origin) from e


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
