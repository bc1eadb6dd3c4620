"""Model inspection: block groups (output shapes, parameters), the frozen-weights check, first-layer kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smallvision.errors import SmallvisionError


def _output_shapes(backbone, groups, image_size: int) -> dict[str, tuple]:
    import torch

    shapes: dict[str, tuple] = {}
    hooks = [
        mods[-1].register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, mods in groups
    ]
    try:
        with torch.inference_mode():
            backbone.eval()(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as e:
        raise SmallvisionError(f"image size {image_size}: the network cannot run on inputs that size ({e})") from e
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _labels(card) -> list[str]:
    """Each backbone's name in tables; numbered (name#i) when a name repeats (an ensemble of two lite0s)."""
    names = [b.name for b in card.backbones]
    return [f"{n}#{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _ensemble_line(card) -> str | None:
    """One line saying what an ensemble averages and which test-time augmentation the model applies (None: plain)."""
    parts = []
    if card.head.members:
        labels = _labels(card)
        members = "; ".join("+".join(labels[i] for i in m.backbones) for m in card.head.members)
        parts.append(f"ensemble of {len(card.head.members)} heads, probabilities averaged: {members}")
    if card.tta:
        parts.append(f"test-time augmentation {card.tta} (applied by the model itself)")
    return " · ".join(parts) or None


def summary(model_dir: str | Path, image_size: int | None = None) -> str:
    """A text table of a saved model's block groups: output shape (for inputs of `image_size`, by default the
    model's own), parameters, and whether they trained."""
    from smallvision.models.backbone import block_groups
    from smallvision.models.folder import load_model

    if image_size is not None and image_size < 1:
        raise SmallvisionError(f"image size {image_size}: must be a positive number of pixels")
    model, card = load_model(model_dir)
    size = card.image_size if image_size is None else image_size
    trained = set(card.trainable)
    rows: list[tuple[str, str, int, bool]] = []
    for i, (backbone, label) in enumerate(zip(model.backbones, _labels(card), strict=True)):
        everything = "all" in trained
        groups = block_groups(backbone)
        shapes = _output_shapes(backbone, groups, size)
        for name, mods in groups:
            n = sum(p.numel() for m in mods for p in m.parameters())
            shape = "x".join(map(str, shapes.get(name, ())))
            rows.append((f"{label}:{name}", shape, n, everything or f"backbones.{i}.{name}" in trained))
    rows.append(("head", str(len(card.classes)), sum(p.numel() for p in model.head.parameters()), True))
    width = max(len(r[0]) for r in rows)
    lines = [
        f"model: {model_dir}  recipe {card.recipe}  classes {len(card.classes)}  input {card.image_size}px",
        f"output shapes for {size}x{size} inputs" + ("" if size == card.image_size else " (as asked)"),
        f"{'block group'.ljust(width)}  {'output':>14}  {'params':>12}  status",
    ]
    if (line := _ensemble_line(card)) is not None:
        lines.insert(1, line)
    lines += [
        f"{name.ljust(width)}  {shape:>14}  {n:>12,}  {'trained' if t else 'frozen'}" for name, shape, n, t in rows
    ]
    total = sum(r[2] for r in rows)
    trainable = sum(r[2] for r in rows if r[3])
    lines.append(
        f"{'total'.ljust(width)}  {'':>14}  {total:>12,}  trainable {trainable:,} · frozen {total - trainable:,}"
    )
    return "\n".join(lines)


def weights_check(model_dir: str | Path) -> str:
    """Per block group: mean and max change from the pretrained weights; frozen groups that moved are flagged."""
    import torch

    from smallvision.models.backbone import block_groups, build_backbone
    from smallvision.models.folder import load_model
    from smallvision.models.weights import resolve_weights

    model, card = load_model(model_dir)
    trained = set(card.trainable)
    lines = [
        "weights check (after vs before training):",
        f"{'block group':<40} {'mean |change|':>14} {'max |change|':>14}  before = after?  status",
    ]
    flagged = 0
    for i, (backbone, bcard, label) in enumerate(zip(model.backbones, card.backbones, _labels(card), strict=True)):
        source = bcard.weights.get("source")
        if source not in ("bundled", "file", "hub"):
            lines.append(f"{label}: trained from scratch; there are no 'before' weights to compare")
            continue
        try:
            spec = resolve_weights(
                bcard.name, bcard.weights.get("detail") if source == "file" else ("hub" if source == "hub" else None)
            )
            before = build_backbone(spec, bcard.pool)
        except SmallvisionError as e:
            lines.append(f"{label}: cannot rebuild the pretrained weights to compare ({e})")
            continue
        if spec.fingerprint != bcard.weights.get("fingerprint"):
            lines.append(f"{label}: note: the weights source changed since training ({spec.detail})")
        after_groups = dict(block_groups(backbone))
        for name, mods_before in block_groups(before):
            diffs = []
            for mb, ma in zip(mods_before, after_groups[name], strict=True):
                for tb, ta in zip(mb.state_dict().values(), ma.state_dict().values(), strict=True):
                    diffs.append((ta.float() - tb.float()).abs().flatten())
            d = torch.cat(diffs) if diffs else torch.zeros(1)
            was_trained = "all" in trained or f"backbones.{i}.{name}" in trained
            same = bool(d.max() == 0)
            status = "trained" if was_trained else ("frozen" if same else "FROZEN BUT MOVED")
            flagged += int(not was_trained and not same)
            lines.append(
                f"{label + ':' + name:<40} {float(d.mean()):>14.3g} {float(d.max()):>14.3g}  {str(same):<15}  {status}"
            )
    lines.append("all frozen layers unchanged" if not flagged else f"{flagged} frozen group(s) moved: check the recipe")
    return "\n".join(lines)


def first_conv_weight(model_dir: str | Path) -> tuple[str, np.ndarray] | None:
    """The network's first convolution by module order: (weight name, weight), or None when it has no convolution.

    The model card names it, so the weight is read with numpy alone (the report worker never imports torch);
    folders saved before the card recorded it build their network to find it.
    """
    from safetensors import safe_open

    from smallvision.models.folder import WEIGHTS_FILE, first_conv, load_model, read_card

    card = read_card(model_dir)
    if card.first_conv is None:
        model, _ = load_model(model_dir)
        name = first_conv(model)
        return None if name is None else (name, model.state_dict()[name].float().numpy())
    path = Path(model_dir) / WEIGHTS_FILE
    with safe_open(str(path), "np") as f:
        if card.first_conv not in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            raise SmallvisionError(f"{path} has no tensor {card.first_conv}, the first convolution its card names")
        return card.first_conv, f.get_tensor(card.first_conv)


def kernels_figure(model_dir: str | Path, path: str | Path) -> Path | None:
    """Write the first convolution layer's kernels to a PNG (None when the network has no convolution)."""
    from smallvision.evaluation.plots import kernels

    found = first_conv_weight(model_dir)
    if found is None:
        return None
    name, weight = found
    return kernels(weight, Path(path), name.removesuffix(".weight"))
