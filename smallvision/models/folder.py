"""Save and load a model folder: `model.safetensors` (weights, never pickle) + `smallvision.json` (what it is)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smallvision import atomic
from smallvision.errors import SmallvisionError
from smallvision.task import task_named

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "smallvision.json"
FORMAT_VERSION = 1


class BackboneCard(BaseModel):
    """One backbone of a saved model."""

    model_config = ConfigDict(extra="forbid")
    name: str
    pool: str = "avg"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class HeadMember(BaseModel):
    """One member of an ensemble head: the backbones it reads (indices into the card's backbones) and its head."""

    model_config = ConfigDict(extra="forbid")
    backbones: list[int] = Field(min_length=1)
    in_features: int = Field(gt=0)
    hidden: int = Field(default=0, ge=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class HeadCard(BaseModel):
    """The classifier head of a saved model: one head on the joined features, or (members) an ensemble of heads
    whose probabilities are averaged; then in_features is the joined width and hidden/dropout are unused."""

    model_config = ConfigDict(extra="forbid")
    in_features: int = Field(gt=0)
    hidden: int = Field(default=0, ge=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    members: list[HeadMember] = Field(default_factory=list)


class ModelCard(BaseModel):
    """Everything `smallvision.json` records about a model; validated on load."""

    model_config = ConfigDict(extra="forbid")
    format: str = "smallvision-model"
    format_version: int = FORMAT_VERSION
    classes: list[str] = Field(min_length=2)
    image_size: int = Field(gt=0)
    resize: str
    backbones: list[BackboneCard] = Field(min_length=1)
    head: HeadCard
    recipe: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    trainable: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    # The weight of the network's first convolution by module order (safetensors keeps no order): the tensor the
    # first-layer kernels figure shows, read without building the network. None in folders saved before it existed.
    first_conv: str | None = None
    # Test-time augmentation the network applies itself in eval mode (predict, evaluate, export, serve all see it).
    tta: Literal["hflip"] | None = None
    # What the outputs mean: one class per image (softmax), or any number of labels (sigmoids and `thresholds`,
    # one per class, chosen on validation; predict takes each label whose probability reaches its threshold).
    task: Literal["single_label", "multi_label"] = "single_label"
    thresholds: list[float] | None = None


def package_versions() -> dict[str, str]:
    """Versions of the packages a model depends on, for the record."""
    from smallvision.version import __version__

    out = {"python": platform.python_version(), "smallvision": __version__}
    for dist in ("torch", "torchvision", "timm", "safetensors"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def first_conv(model) -> str | None:
    """The weight name of the network's first 2-D convolution in module order (None if it has none)."""
    from torch import nn

    return next((f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def architecture_first_conv(card: ModelCard) -> str | None:
    """first_conv of the network a card describes, remembered per architecture in the cache folder.

    The network is built once per architecture on the meta device (no memory, no weights); a warm run reads the
    answer back and never imports timm for it.
    """
    import json

    from smallvision.data.cache import cache_root, key_of

    arch = {"backbones": [[b.name, b.pool, b.options] for b in card.backbones], "timm": card.versions.get("timm")}
    path = cache_root() / "architectures" / f"first-conv-{key_of(arch)}.json"
    try:
        return json.loads(path.read_text())["first_conv"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not remembered yet (or unreadable): found again below
    import torch

    with torch.device("meta"):
        name = first_conv(build_from_card(card))
    atomic.write_json(path, {"architecture": arch, "first_conv": name})
    return name


def save_model(model, card: ModelCard, folder: str | Path) -> Path:
    """Write a network's model folder atomically (weights first, card last)."""
    return save_state(model.state_dict(), card.model_copy(update={"first_conv": first_conv(model)}), folder)


def save_state(state: dict, card: ModelCard, folder: str | Path) -> Path:
    """Write a model folder from a full state dict (weights first, card last); the card names the first conv."""
    from safetensors.torch import save_file

    if card.first_conv is None:
        card = card.model_copy(update={"first_conv": architecture_first_conv(card)})
    if card.first_conv is not None and card.first_conv not in state:  # never lose a model over a figure's pointer
        log.warning("warning: first convolution %s is not among the weights to save", card.first_conv)
        card = card.model_copy(update={"first_conv": None})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic.atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "smallvision-model"})
    atomic.write_text(folder / CARD_FILE, card.model_dump_json(indent=2) + "\n")
    return folder


def read_card(folder: str | Path) -> ModelCard:
    """Read and validate `smallvision.json`, with errors that name the file and the field."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise SmallvisionError(f"{folder}: not a model folder (no {CARD_FILE}); point at a run's model/ folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SmallvisionError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise SmallvisionError(f"{path}: expected a JSON object")
    if raw.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise SmallvisionError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported by this smallvision "
            f"(it reads version {FORMAT_VERSION}); upgrade smallvision or re-export the model"
        )
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SmallvisionError(f"{path}: field {where!r}: {first['msg']}") from e


def build_from_card(card: ModelCard):
    """The network a card describes, with no weights loaded."""
    from smallvision.models.backbone import bare_backbone
    from smallvision.models.head import EnsembleHead, Head, ImageClassifier, static_feature_dim

    backbones = [bare_backbone(b.name, b.pool, b.mean, b.std, b.options) for b in card.backbones]
    classes = len(card.classes)
    if not card.head.members:
        head = Head(card.head.in_features, classes, card.head.dropout, card.head.hidden)
        return ImageClassifier(backbones, head, tta=card.tta, task=task_named(card.task))
    dims = [static_feature_dim(b) or b.feature_dim(card.image_size) for b in backbones]
    for k, m in enumerate(card.head.members):
        if any(not 0 <= i < len(backbones) for i in m.backbones):
            raise SmallvisionError(
                f"{CARD_FILE}: head member {k} reads backbones {m.backbones}, but the card lists {len(backbones)}"
            )
        if sum(dims[i] for i in m.backbones) != m.in_features:
            raise SmallvisionError(
                f"{CARD_FILE}: head member {k} reads {m.in_features} features, but its backbones {m.backbones} give "
                f"{sum(dims[i] for i in m.backbones)}; the card was edited or mixed from two models"
            )
    heads = [Head(m.in_features, classes, m.dropout, m.hidden) for m in card.head.members]
    groups = [m.backbones for m in card.head.members]
    task = task_named(card.task)
    return ImageClassifier(backbones, EnsembleHead(heads, groups, dims, task), tta=card.tta, task=task)


def head_card(head) -> HeadCard:
    """The card of a head module (a Head, or an EnsembleHead and its members), read from its layers."""
    from smallvision.models.head import EnsembleHead

    def plain(h) -> dict:
        linears = [m for m in h.layers if hasattr(m, "out_features")]
        hidden = linears[0].out_features if len(linears) > 1 else 0
        return {"in_features": linears[0].in_features, "hidden": hidden, "dropout": float(h.layers[0].p)}

    if not isinstance(head, EnsembleHead):
        return HeadCard(**plain(head))
    members = [HeadMember(backbones=g, **plain(h)) for h, g in zip(head.heads, head.groups, strict=True)]
    return HeadCard(in_features=sum(head.dims), members=members)


def ensemble_layout(model, groups: list[list[int]], members: list[tuple[list, list[str]]]) -> tuple[list, list[str]]:
    """The backbone cards (a shared backbone once) and trained groups of `model`, from each member's (backbone cards,
    trained groups), renamed from the member's backbone indices to the model's through `groups`."""
    from smallvision.models.backbone import block_groups

    backbones: list = [None] * len(model.backbones)
    trainable = {"head"}
    for (cards, trained), group in zip(members, groups, strict=True):
        for j, i in enumerate(group):
            backbones[i] = backbones[i] or cards[j]
            for entry in trained:
                prefix = f"backbones.{j}."
                if entry == "all":
                    trainable.update(f"backbones.{i}.{name}" for name, _ in block_groups(model.backbones[i]))
                elif entry.startswith(prefix):
                    trainable.add(f"backbones.{i}.{entry.removeprefix(prefix)}")
    return backbones, sorted(trainable)


def ensemble_card(model, cards: list[ModelCard], **fields: Any) -> ModelCard:
    """The card of `smallvision.models.head.ensemble(members)`, from the members' cards (in the same order).

    Backbone cards follow the ensemble's (shared backbones once), each member's trained groups are renamed to the
    ensemble's backbone indices, and `fields` (recipe, metrics, tta, ...) override the rest.
    """
    if len(cards) != len(model.head.groups):
        raise SmallvisionError(f"{len(cards)} member card(s) for an ensemble of {len(model.head.groups)} members")
    first = cards[0]
    for k, c in enumerate(cards[1:], start=1):
        for what in ("classes", "image_size", "resize"):
            if getattr(c, what) != getattr(first, what):
                raise SmallvisionError(
                    f"ensemble member {k} has {what} {getattr(c, what)!r}, member 0 {getattr(first, what)!r}; "
                    "members must be trained on the same classes and images"
                )
    backbones, trainable = ensemble_layout(model, model.head.groups, [(c.backbones, c.trainable) for c in cards])
    values = {
        "classes": first.classes,
        "image_size": first.image_size,
        "resize": first.resize,
        "backbones": backbones,
        "head": head_card(model.head),
        "recipe": "ensemble",
        "trainable": trainable,
        "versions": package_versions(),
        "tta": model.tta,
    }
    return ModelCard(**{**values, **fields})


def load_model(folder: str | Path):
    """Load (model in eval mode, card) from a model folder; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card = read_card(folder)
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise SmallvisionError(f"{folder}: {WEIGHTS_FILE} is missing; the model folder is incomplete")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise SmallvisionError(f"{weights}: unreadable safetensors file ({e}); re-save the model") from e
    return build_model(card, state, str(weights)), card


def build_model(card: ModelCard, state: dict, where: str = WEIGHTS_FILE):
    """The network a card describes with `state` (a full state dict) loaded, in eval mode; `where` names the source
    of the weights in errors."""
    model = build_from_card(card)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise SmallvisionError(
            f"{where} does not match {CARD_FILE} ({detail}); the folder was edited or mixed from two models"
        )
    model.load_state_dict(state)
    model.eval()
    return model
