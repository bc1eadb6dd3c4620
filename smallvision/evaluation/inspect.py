"""Model summary: block groups with parameter counts (total, trained in the last stage, frozen)."""

from __future__ import annotations

from pathlib import Path


def summary(model_dir: str | Path) -> str:
    """A text table of a saved model's block groups, and which of them trained."""
    from smallvision.models.backbone import block_groups
    from smallvision.models.folder import load_model

    model, card = load_model(model_dir)
    trained = set(card.trainable)
    rows: list[tuple[str, int, bool]] = []
    for i, (backbone, bcard) in enumerate(zip(model.backbones, card.backbones, strict=True)):
        everything = "all" in trained
        for name, mods in block_groups(backbone):
            n = sum(p.numel() for m in mods for p in m.parameters())
            rows.append((f"{bcard.name}:{name}", n, everything or f"backbones.{i}.{name}" in trained))
    rows.append(("head", sum(p.numel() for p in model.head.parameters()), True))
    width = max(len(r[0]) for r in rows)
    lines = [
        f"model: {model_dir}  recipe {card.recipe}  classes {len(card.classes)}  input {card.image_size}px",
        f"{'block group'.ljust(width)}  {'params':>12}  status",
    ]
    lines += [f"{name.ljust(width)}  {n:>12,}  {'trained' if t else 'frozen'}" for name, n, t in rows]
    total = sum(n for _, n, _ in rows)
    trainable = sum(n for _, n, t in rows if t)
    lines.append(f"{'total'.ljust(width)}  {total:>12,}  trainable {trainable:,} · frozen {total - trainable:,}")
    return "\n".join(lines)
