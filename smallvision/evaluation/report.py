"""A run folder's figures and its single self-contained page, report.html (figures embedded)."""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from smallvision import atomic

log = logging.getLogger(__name__)

FIGURES = {
    "curves": "Training curves",
    "confusion": "Confusion matrix",
    "per_class": "Per-class precision, recall, F1",
    "top_losses": "Top losses",
    "gradcam": "Grad-CAM",
    "kernels": "First-layer kernels",
    "augmentation": "Augmentation preview",
}


def figures_for_run(
    run_dir: str,
    model_dir: str,
    config: str,
    val_paths: list[str],
    val_digests: list[str],
    val_labels: list[int],
    history: list[dict],
    summary: dict[str, Any],
    classes: list[str],
    val_probs: np.ndarray | None,
    gradcam: bool,
) -> tuple[list[Path], dict[str, str]]:
    """A finished training run's figures from plain values (what the report worker receives): see run_figures."""
    from smallvision.config import build_config, load_config
    from smallvision.data.cache import decoded_images
    from smallvision.evaluation.plots import worst

    cfg = build_config(load_config(config), str(config))
    labels = np.asarray(val_labels, dtype=np.int64)
    keep = np.arange(len(labels))
    if val_probs is not None and len(labels) > 16:  # decode only what the figures show, not the whole split
        shown = [worst(labels, val_probs), np.linspace(0, len(labels) - 1, 4).astype(int), [0]]
        keep = np.unique(np.concatenate(shown))
        val_probs = val_probs[keep]
    images, failed = decoded_images(
        [Path(val_paths[i]) for i in keep], [val_digests[i] for i in keep], cfg.data.image_size, progress=False
    )
    ok = [pos for pos in range(len(keep)) if pos not in failed]
    labels = labels[keep][ok]
    val_probs = val_probs[ok] if val_probs is not None else None
    transform = None
    if cfg.recipe.name != "features":
        from smallvision.data.transforms import train_transform

        transform = train_transform(cfg.recipe.augment, cfg.data.image_size)
    return run_figures(
        Path(run_dir), Path(model_dir), history, summary, classes, images, labels, val_probs, transform, gradcam
    )


def run_figures(
    run_dir: Path,
    model_dir: Path,
    history: list[dict],
    metrics: dict[str, Any],
    classes: list[str],
    val_images: np.ndarray | None,
    val_labels: np.ndarray | None,
    val_probs: np.ndarray | None,
    augment_transform,
    gradcam: bool,
) -> tuple[list[Path], dict[str, str]]:
    """Write every figure a run gets into RUN_DIR/figures/; return their paths and {figure: error} for any that failed.

    A figure that fails is logged and left out, never the end of the others: the model and metrics.json are saved
    before figures are drawn. Only Grad-CAM needs the network; without `gradcam` (the features recipe) no backbone
    is built or imported.
    """
    from smallvision.evaluation import plots

    fig_dir = Path(run_dir) / "figures"
    val = metrics["val"]
    drawn = {
        "confusion": lambda path: plots.confusion(val["confusion_matrix"], classes, path),
        "per_class": lambda path: plots.per_class(val["per_class"], path),
    }
    if history:
        drawn = {"curves": lambda path: plots.curves(history, path)} | drawn
    if val_images is not None and len(val_images) and val_probs is not None:
        drawn["top_losses"] = lambda path: plots.top_losses(val_images, val_labels, val_probs, classes, path)
        if augment_transform is not None:
            drawn["augmentation"] = lambda path: plots.augmentation_preview(val_images[0], augment_transform, path)
        if gradcam:
            drawn["gradcam"] = lambda path: _gradcam(model_dir, val_images, classes, path)
    drawn["kernels"] = lambda path: _kernels(model_dir, path)
    out, errors = [], {}
    for stem, draw in drawn.items():
        try:
            path = draw(fig_dir / f"{stem}.png")
        except Exception as e:  # one figure's failure is reported; the others and the run's results stand
            errors[stem] = f"{type(e).__name__}: {e}"
            log.warning("warning: the %s figure failed: %s", stem, errors[stem], exc_info=True)
        else:
            out += [path] if path is not None else []
    return out, errors


def _gradcam(model_dir: Path, images: np.ndarray, classes: list[str], path: Path) -> Path:
    from smallvision.evaluation import plots
    from smallvision.models.folder import load_model

    model, _ = load_model(model_dir)
    pick = np.linspace(0, len(images) - 1, num=min(4, len(images))).astype(int)
    return plots.gradcam(model, images[pick], classes, path)


def _kernels(model_dir: Path, path: Path) -> Path | None:
    from smallvision.evaluation import plots
    from smallvision.evaluation.inspect import first_conv_weight

    first = first_conv_weight(model_dir)  # named in the model card, read through numpy: no torch here
    return None if first is None else plots.kernels(first[1], path, first[0].removesuffix(".weight"))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


class Raw(str):
    """Table cell content that is already HTML (a link), inserted unescaped."""


def _cell(v: Any) -> str:
    return v if isinstance(v, Raw) else html.escape(_fmt(v))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _split_section(name: str, m: dict) -> str:
    overall = [[k, m[k]] for k in ("n", "accuracy", "loss") if k in m]
    overall += [
        [f"{metric} ({avg})", m[f"{metric}_{avg}"]]
        for avg in ("micro", "macro", "weighted")
        for metric in ("precision", "recall", "f1")
    ]
    per = [[c, v["precision"], v["recall"], v["f1"], v["accuracy"], v["support"]] for c, v in m["per_class"].items()]
    return (
        f'<section id="metrics-{name}"><h2>{name} metrics</h2>'
        + _table(["metric", "value"], overall)
        + "<h3>per class</h3>"
        + _table(["class", "precision", "recall", "f1", "accuracy", "support"], per)
        + f"<h3>classification report</h3><pre>{html.escape(m['report'])}</pre></section>"
    )


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto}figure{margin:1em 0}h1{margin-bottom:.2em}"""


# Marks on <body> how many embedded figures decoded, so a headless browser test can tell they rendered.
IMAGE_CHECK = (
    "window.addEventListener('load',()=>{const i=[...document.images];"
    "document.body.dataset.images=i.length;document.body.dataset.rendered=i.filter(x=>x.naturalWidth>0).length;});"
)


def _figure_errors(errors: dict[str, str], log_file: bool) -> str:
    """A notice at the top of the page naming the figures that could not be drawn, and why."""
    if not errors:
        return ""
    items = "".join(
        f"<li><b>{html.escape(FIGURES.get(stem, stem))}</b>: <code>{html.escape(e)}</code></li>"
        for stem, e in errors.items()
    )
    return (
        '<section id="warnings" style="border:2px solid #c60;padding:.5em 1em;background:#fff6ec">'
        f"<h2>Warning: {len(errors)} figure(s) could not be drawn</h2><ul>{items}</ul>"
        "<p>The model and all metrics were saved before the figures were drawn and are unaffected."
        + (" The report worker's log is report-worker.log in the run folder." if log_file else "")
        + "</p></section>"
    )


def write_report(run_dir: str | Path) -> Path:
    """Render RUN_DIR/report.html from metrics.json, config.yaml and figures/*.png (all embedded)."""
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    data = m.get("data", {})
    summary = [
        ["data", data.get("root", "")],
        ["layout", data.get("layout", "")],
        ["classes", ", ".join(m["classes"])],
        ["recipe", m["recipe"]],
        ["backbone", m["backbone"]],
        ["weights", m.get("weights", "")],
        ["device", m.get("device", "")],
        ["time", f"{m.get('seconds', 0):.1f} s"],
        ["validation accuracy", m["val_accuracy"]],
        ["test accuracy", m.get("test_accuracy", "no test split (or not evaluated)")],
        ["test-time augmentation", "yes" if m.get("tta") else "no"],
    ]
    counts = data.get("counts", {})
    splits = list(counts)
    count_rows = [[c] + [counts[s].get(c, 0) for s in splits] for c in m["classes"]]
    skipped = data.get("skipped", [])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>smallvision run {html.escape(run_dir.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>smallvision run: {html.escape(run_dir.name)}</h1>",
        _figure_errors(m.get("figure_errors", {}), (run_dir / "report-worker.log").is_file()),
        '<section id="summary"><h2>Summary</h2>' + _table(["", ""], summary),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in m.get("notes", [])) + "</ul></section>",
        '<section id="data"><h2>Data</h2>' + _table(["class"] + splits, count_rows),
        (
            f"<p>{len(skipped)} file(s) skipped:</p>"
            + _table(["path", "reason"], [[s["path"], s["reason"]] for s in skipped])
        )
        if skipped
        else "<p>No files skipped.</p>",
        "</section>",
    ]
    for split in ("val", "test"):
        if split in m:
            parts.append(_split_section(split, m[split]))
    parts.append('<section id="figures"><h2>Figures</h2>')
    for stem, title in FIGURES.items():
        png = run_dir / "figures" / f"{stem}.png"
        if png.is_file():
            parts.append(f'<figure id="fig-{stem}"><figcaption><b>{title}</b></figcaption>{_img(png)}</figure>')
    parts.append("</section>")
    parts.append(f'<section id="config"><h2>Config</h2><pre>{html.escape(config)}</pre></section>')
    parts.append(f"<script>{IMAGE_CHECK}</script></body></html>")
    path = run_dir / "report.html"
    atomic.write_text(path, "\n".join(parts))
    return path
