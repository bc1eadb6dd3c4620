"""A multi-label run's figures and its page (report.html): macro mAP with its interval first, then what was chosen,
the rarest labels, every label's scores and threshold, the images with the most wrong labels, and the figures."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from smallvision import atomic
from smallvision.evaluation.pages import Raw, html_table, img_tag, kv_table, page, pct
from smallvision.results import RunSummary, decisions
from smallvision.task import MULTI_LABEL

FIGURES = {
    "label_pr": "Precision-recall per label, with the chosen threshold",
    "cooccurrence": "Label co-occurrence, true and predicted",
    "curves": "Training curves (loss and macro mAP)",
    "label_calibration": "Calibration per label",
}
RAREST = 5  # labels the first screen names, rarest first
WORST = 10  # images in the "most wrong labels" table


def _names(row: np.ndarray, labels: list[str]) -> str:
    return " ".join(labels[j] for j in np.flatnonzero(row))


def predictions_csv(path: Path, paths: list[str], truth, pred, probs, labels: list[str]) -> None:
    """path, true labels, predicted labels (space-separated), then each label's probability."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "labels", "predicted", *labels])
    for p, t, d, row in zip(paths, truth, pred, probs, strict=True):
        writer.writerow([p, _names(t, labels), _names(d, labels), *(f"{v:.6f}" for v in row)])
    atomic.write_text(path, buf.getvalue())


def multilabel_figures(
    run_dir: str,
    split: str,
    paths: list[str],
    targets: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    thresholds: list[float],
    history: list[dict],
    chosen: int | None,
) -> dict[str, str]:
    """Draw a multi-label run's figures on `split` and write its predictions CSV; {figure: error} for any that
    failed (the others are written)."""
    from smallvision.evaluation import plots

    run = Path(run_dir)
    fig_dir = run / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    truth = np.asarray(targets) > 0.5
    cuts = np.asarray(thresholds)
    pred = MULTI_LABEL.decide(probs, cuts)
    predictions_csv(run / f"predictions_{split}.csv", paths, truth, pred, probs, classes)
    draw = {
        "label_pr": lambda p: plots.label_pr(truth, probs, classes, cuts, p),
        "cooccurrence": lambda p: plots.cooccurrence(truth, pred, classes, p),
        "curves": lambda p: plots.curves(history, p, chosen, score="map"),
        "label_calibration": lambda p: plots.label_calibration(truth, probs, classes, p),
    }
    errors = {}
    for stem, fn in draw.items():
        try:
            fn(fig_dir / f"{stem}.png")
        except Exception as e:  # one figure's failure is reported, never the run's
            errors[stem] = f"{type(e).__name__}: {e}"
    return errors


def _figure(run_dir: Path, stem: str) -> str:
    png = run_dir / "figures" / f"{stem}.png"
    if not png.is_file():
        return ""
    caption = f"<figcaption><b>{html.escape(FIGURES[stem])}</b></figcaption>"
    return f'<figure id="fig-{stem}">{caption}{img_tag(png, FIGURES[stem])}</figure>'


def _first_screen(m: RunSummary, split: str) -> str:
    """The verdict: macro mAP with its interval on the split the run is judged on, then the per-image scores."""
    s = m[split]
    low, high = s["map_macro_ci95"]
    where = "the test split, untouched until the model was chosen" if split == "test" else "the validation split"
    caveat = ""
    if split == "val":
        caveat = (
            "<p>The thresholds and the kept epoch were chosen on this split, so it flatters the model; for an "
            "untouched estimate, hold out a test split: --test-fraction 0.2.</p>"
        )
    card = s["cardinality"]
    rows = [
        ["macro mAP", f"{pct(s['map_macro'])} (95% interval {pct(low)} to {pct(high)})"],
        ["micro mAP", pct(s["map_micro"])],
        ["F1 per image (samples)", pct(s["f1_samples"])],
        ["F1 micro / macro", f"{pct(s['f1_micro'])} / {pct(s['f1_macro'])}"],
        ["exact-match (subset) accuracy", pct(s["subset_accuracy"])],
        ["Hamming loss", f"{s['hamming_loss']:.4f}"],
        ["labels per image, true / predicted", f"{card['true']:.2f} / {card['predicted']:.2f}"],
    ]
    return (
        f"<section id='verdict' class='verdict'><div class='card' id='verdict-card'>"
        f"<h1 id='headline'>macro mAP {pct(s['map_macro'])} on {where} (n={s['n']})</h1>{caveat}"
        f"{kv_table(rows)}</div></section>"
    )


def _chosen(m: RunSummary) -> str:
    rows = [
        ["recipe", m["recipe"]],
        ["backbone", m["backbone"]],
        ["kept epoch (best validation macro mAP)", m.get("best_epoch")],
        ["thresholds", next((n for n in m.get("notes", []) if n.startswith("thresholds:")), "-")],
    ]
    made = "".join(f"<li>{html.escape(d.text)}</li>" for d in decisions(m))  # auto's, on validation
    listed = f"<ul id='decisions'>{made}</ul>" if made else ""
    return f"<section id='chosen'><h2>What was chosen</h2>{kv_table(rows)}{listed}</section>"


def _labels_section(m: RunSummary, split: str) -> list[str]:
    """The rarest labels' scores, then every label's, most frequent in training first."""
    per = m[split]["per_label"]
    train = m.get("data", {}).get("counts", {}).get("train", {})
    order = sorted(per, key=lambda name: -train.get(name, 0))
    head = ["label", "train images", "support", "AP", "ROC AUC", "threshold", "precision", "recall", "F1"]

    def row(name: str) -> list[Any]:
        v = per[name]
        return [name, train.get(name, 0), v["support"], v["ap"], v["roc_auc"], v["threshold"], *_prf(v)]

    rare = sorted(per, key=lambda name: train.get(name, 0))[:RAREST]
    return [
        f"<section id='rarest'><h2>The {len(rare)} rarest labels</h2>{html_table(head, [row(n) for n in rare])}"
        "</section>",
        f"<section id='per-label'><h2>Every label</h2>{html_table(head, [row(n) for n in order], 'labels')}</section>",
    ]


def _prf(v: dict) -> list[float]:
    return [v["precision"], v["recall"], v["f1"]]


def _worst_section(run_dir: Path, split: str) -> str:
    """The images with the most wrong labels (missed plus extra), with their true and predicted label sets."""
    path = run_dir / f"predictions_{split}.csv"
    if not path.is_file():
        return ""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))

    def wrong(r: dict) -> int:
        return len(set(r["labels"].split()) ^ set(r["predicted"].split()))

    rows = sorted(rows, key=lambda r: -wrong(r))[:WORST]
    table = html_table(
        ["image", "wrong labels", "true", "predicted"],
        [[Raw(html.escape(Path(r["path"]).name)), wrong(r), r["labels"] or "-", r["predicted"] or "-"] for r in rows],
        "worst",
    )
    return f"<section id='most-wrong'><h2>Images with the most wrong labels</h2>{table}</section>"


def write_multilabel_report(run_dir: Path, m: RunSummary) -> Path:
    """Render RUN_DIR/report.html of a multi-label run from metrics.json, its predictions and figures."""
    split = "test" if "test" in m else "val"
    figures = [_figure(run_dir, stem) for stem in FIGURES]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in m.get("notes", []))
    body = [
        _first_screen(m, split),
        _chosen(m),
        *_labels_section(m, split),
        _worst_section(run_dir, split),
        "<section id='figures'><h2>Figures</h2>" + "".join(figures) + "</section>",
        f"<section id='notes'><h2>Notes</h2><ul>{notes}</ul></section>",
    ]
    data = m.get("data", {})
    header = (
        f"<b>smallvision run {html.escape(run_dir.name)}</b>"
        f"<span>multi-label · {html.escape(m['recipe'])} · {html.escape(m['backbone'])} · "
        f"{html.escape(data.get('root', ''))}</span>"
    )
    path = run_dir / "report.html"
    atomic.write_text(path, page(f"smallvision run {run_dir.name}", header, body))
    return path
