"""A run folder's figures and its single self-contained page, report.html (figures embedded)."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from smallvision import atomic
from smallvision.evaluation.pages import (
    SORT_SCRIPT,
    duration,
    fmt,
    html_table,
    img_tag,
    kv_table,
    page,
    pct,
)
from smallvision.results import SHORT, RunSummary, read_summary, score_of
from smallvision.task import SINGLE_LABEL

log = logging.getLogger(__name__)

FIGURES = {
    "confusion": "Confusion matrix",
    "curves": "Training curves",
    "confused": "Most confused pairs",
    "top_losses": "Top losses",
    "gradcam": "Grad-CAM",
    "reliability": "Reliability diagram",
    "roc_pr": "ROC and precision-recall curves",
    "per_class": "Per-class precision, recall, F1",
    "kernels": "First-layer kernels",
    "augmentation": "Augmentation preview",
    "accuracy": "Accuracy against time",
}
CONFUSED_PAIRS = 3
PER_PAIR = 4


def headline_split(metrics: dict[str, Any]) -> str:
    """The split a run is judged on: test when it was evaluated, else validation."""
    return "test" if "test" in metrics else "val"


HELD_BACK = "test split held back: compare evaluates only the chosen run on it (see the compare page)"


def test_held_back(metrics: dict[str, Any]) -> bool:
    """Whether the data has a test split the run was not scored on (compare scores only its chosen run there)."""
    return "test" not in metrics and "test" in metrics.get("data", {}).get("counts", {})


CHOICE_WORDS = {
    "head_lr": "head learning rate",
    "loss": "multi-label loss",
    "candidate": "candidate",
    "finetune_round": "fine-tuning round",
    "average": "average of candidates",
    "tta": "flipped views",
}
UNTOUCHED = (
    "for an untouched estimate, hold out a test split: --test-fraction 0.2 (or a test/ folder beside train/ and val/)"
)


def selection_words(selection: dict[str, Any] | None) -> str:
    """What the validation number is the best of (metrics.json's `selection`), in words; empty when nothing was
    chosen on it (one epoch, no choice) or the run predates the record."""
    by = (selection or {}).get("by", {})
    if set(by) == {"epoch"}:
        return f"the best of {by['epoch']} epochs on it" if by["epoch"] > 1 else ""
    if not by:
        return ""
    kinds = ", ".join(f"{CHOICE_WORDS.get(k, k)} {n}" for k, n in by.items())
    return f"the best of {selection['choices']} choices made on it ({kinds}), each network at its best epoch there"


def headline_values(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers a model card keeps of its run (metrics.json): accuracies, split sizes and what selected the
    validation number, so the server's header says what the report says."""
    key = "map_macro" if metrics.get("task") == "multi_label" else "accuracy"
    short = SHORT[key]
    out = {f"val_{short}": metrics["val"][key], "val_loss": metrics["val"]["loss"], "val_n": metrics["val"]["n"]}
    if "test" in metrics:
        out |= {f"test_{short}": metrics["test"][key], "test_n": metrics["test"]["n"]}
    elif test_held_back(metrics):
        out["test_held_back"] = True
    if "selection" in metrics:
        out["selection"] = metrics["selection"]
    return out


def validation_caveat(values: dict[str, Any]) -> str:
    """Why a validation headline flatters the model and how to get an untouched estimate (headline_values' dict);
    empty when nothing was selected on validation."""
    words = selection_words(values.get("selection"))
    if not words:
        return ""
    hint = HELD_BACK if values.get("test_held_back") else UNTOUCHED
    return f"selected on this split, so it flatters the model: {words}; {hint}"


def headline(values: dict[str, Any]) -> str:
    """One line for a model's accuracy (headline_values' dict, a model card's metrics): the untouched test split's
    when there is one, else validation's with how it was selected."""
    short, name = ("map", "macro mAP") if "val_map" in values else ("accuracy", "accuracy")
    if not isinstance(values.get(f"val_{short}"), float | int):
        return "no accuracy recorded"

    def n(split: str) -> str:
        return f" (n={values[split + '_n']})" if split + "_n" in values else ""

    val = pct(values[f"val_{short}"])
    if f"test_{short}" in values:
        words = selection_words(values.get("selection"))
        return (
            f"test {name} {pct(values[f'test_{short}'])}{n('test')}, untouched until the model was chosen; "
            f"validation {val}{n('val')}" + (f", {words}" if words else "")
        )
    caveat = validation_caveat(values)
    return f"validation {name} {val}{n('val')}" + (f", {caveat}" if caveat else "")


def chosen_row(history: list[dict], best_epoch: int | None, kept_stage: str | None) -> int | None:
    """The 1-based row of the history whose weights the run kept: `best_epoch` counts within `kept_stage`
    (metrics.json's, recorded when a recipe kept an earlier stage's weights), else within the last stage."""
    if not history or not best_epoch:
        return None
    stages = list(dict.fromkeys(row.get("stage", "") for row in history))
    if kept_stage is not None and kept_stage not in stages:
        log.warning("warning: metrics.json keeps stage %r, which history.csv does not have", kept_stage)
    stage = kept_stage if kept_stage in stages else stages[-1]
    offset = next(i for i, row in enumerate(history) if row.get("stage", "") == stage)
    return offset + best_epoch


def confused_hits(
    labels: np.ndarray, probs: np.ndarray, classes: list[str], pairs: list, limit: int = 4 * PER_PAIR
) -> list[np.ndarray]:
    """Per (true, predicted, count) pair, the indices of up to `limit` of its images, most confident in the wrong
    class first: the ones the most-confused figure shows, so only those are decoded."""
    pred = SINGLE_LABEL.decide(probs)
    out = []
    for t, p, _ in pairs:
        hits = np.flatnonzero((labels == classes.index(t)) & (pred == classes.index(p)))
        out.append(hits[np.argsort(-probs[hits, classes.index(p)], kind="stable")][:limit])
    return out


def _predictions_csv(path: Path, paths: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """Every held-out image's true class, prediction, confidence and probabilities: the numbers behind the figures."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "true", "predicted", "confidence", *(f"p_{c}" for c in classes)])
    for p, y, row, top in zip(paths, labels.tolist(), probs.tolist(), SINGLE_LABEL.decide(probs).tolist(), strict=True):
        writer.writerow([p, classes[y], classes[top], repr(row[top]), *map(repr, row)])
    atomic.write_text(path, buf.getvalue())


def figures_for_run(
    run_dir: str,
    model_dir: str,
    config: str,
    split: str,
    paths: list[str],
    digests: list[str],
    labels: list[int],
    history: list[dict],
    summary: dict[str, Any],
    classes: list[str],
    probs: np.ndarray | None,
    gradcam: bool,
) -> tuple[list[Path], dict[str, str]]:
    """A finished run's figures from plain values (what the report worker receives), drawn on `split`, the split the
    run is judged on; also writes RUN_DIR/predictions_<split>.csv. See run_figures."""
    from smallvision.config import build_config, load_config
    from smallvision.data.cache import decoded_images
    from smallvision.evaluation.plots import worst
    from smallvision.models.folder import read_card
    from smallvision.recipe_specs import spec

    cfg = build_config(load_config(config), str(config))
    size = read_card(model_dir).image_size  # auto chooses the size; the model records the one it trained at
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.arange(len(labels))
    held_out = (labels, probs) if probs is not None else None
    if probs is not None:
        _predictions_csv(Path(run_dir) / f"predictions_{split}.csv", paths, labels, probs, classes)
        if len(labels) > 16:  # decode only what the figures show, not the whole split
            confused = confused_hits(labels, probs, classes, summary[split]["most_confused"][:CONFUSED_PAIRS])
            shown = [worst(labels, probs), np.linspace(0, len(labels) - 1, 4).astype(int), [0], *confused]
            keep = np.unique(np.concatenate(shown)).astype(int)
            probs = probs[keep]
    images, failed = decoded_images([Path(paths[i]) for i in keep], [digests[i] for i in keep], size, progress=False)
    ok = [pos for pos in range(len(keep)) if pos not in failed]
    labels = labels[keep][ok]
    probs = probs[ok] if probs is not None else None
    transform = None
    if spec(cfg.recipe.name).end_to_end:  # the augmentation preview shows what the network trained on
        from smallvision.data.transforms import train_transform

        transform = train_transform(cfg.recipe.augment, size)
    return run_figures(
        Path(run_dir),
        Path(model_dir),
        history,
        summary,
        classes,
        images,
        labels,
        probs,
        transform,
        gradcam,
        split,
        held_out,
    )


def run_figures(
    run_dir: Path,
    model_dir: Path,
    history: list[dict],
    metrics: dict[str, Any],
    classes: list[str],
    images: np.ndarray | None,
    labels: np.ndarray | None,
    probs: np.ndarray | None,
    augment_transform,
    gradcam: bool,
    split: str = "val",
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Write every figure a run gets into RUN_DIR/figures/; return their paths and {figure: error} for any that failed.

    The confusion matrix, calibration and ROC figures are of `split` (its images, labels and probabilities given
    here, `images` those shown); the reliability diagram reads the split's bins from `metrics`; the ROC curves are
    drawn from `held_out`, the whole split's labels and probabilities. A figure that fails is logged and left out, never
    the end of the others: the model and metrics.json are saved before figures are drawn. Only Grad-CAM needs the
    network; without `gradcam` (the features recipe) no backbone is built or imported.
    """
    from smallvision.evaluation import plots
    from smallvision.evaluation.metrics import ECE_BINS

    fig_dir = Path(run_dir) / "figures"
    m = metrics[split]
    name = "test" if split == "test" else "validation"
    drawn = {
        "confusion": lambda path: plots.confusion(
            m["confusion_matrix"], classes, path, f"{name} split, n={m['n']} (count, share of row)"
        ),
        "per_class": lambda path: plots.per_class(m["per_class"], path),
    }
    if history:
        kept = chosen_row(history, metrics.get("best_epoch"), metrics.get("kept_stage"))
        drawn = {"curves": lambda path: plots.curves(history, path, kept)} | drawn
    if "calibration_bins" in m:
        drawn["reliability"] = lambda path: plots.reliability(m["calibration_bins"], m["ece"], m["n"], path, ECE_BINS)
    if held_out is not None:
        drawn["roc_pr"] = lambda path: plots.roc_pr(*held_out, classes, path)
    if images is not None and len(images) and probs is not None:
        drawn["confused"] = lambda path: plots.confused_pairs(
            images, labels, probs, classes, m.get("most_confused", [])[:CONFUSED_PAIRS], path, PER_PAIR
        )
        drawn["top_losses"] = lambda path: plots.top_losses(images, labels, probs, classes, path)
        if augment_transform is not None:
            drawn["augmentation"] = lambda path: plots.augmentation_preview(images[0], augment_transform, path)
        if gradcam:
            drawn["gradcam"] = lambda path: _gradcam(model_dir, images, classes, path)
    drawn["kernels"] = lambda path: _kernels(model_dir, path)
    return _drawn(drawn, fig_dir)


def _drawn(drawn: dict, fig_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """Draw each figure into `fig_dir`; one that fails is logged and reported, never the end of the others."""
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


def accuracy_interval(m: dict[str, Any]) -> tuple[float, float]:
    """A split's 95% accuracy interval: as recorded, or (runs from before it was) from its accuracy and n."""
    from smallvision.evaluation.metrics import wilson_interval

    if "accuracy_ci95" in m:
        lo, hi = m["accuracy_ci95"]
        return lo, hi
    return wilson_interval(round(m["accuracy"] * m["n"]), m["n"])


def _split_section(name: str, m: dict) -> str:
    overall = [[k, m[k]] for k in ("n", "accuracy", "loss", "ece", "roc_auc_macro") if k in m]
    lo, hi = accuracy_interval(m)
    overall.insert(2, ["accuracy 95% interval (Wilson)", f"{lo:.4f} to {hi:.4f}"])
    overall += [
        [f"{metric} ({avg})", m[f"{metric}_{avg}"]]
        for avg in ("micro", "macro", "weighted")
        for metric in ("precision", "recall", "f1")
    ]
    auc, ap = m.get("roc_auc", {}), m.get("average_precision", {})
    per = [
        [c, v["precision"], v["recall"], v["f1"], v["accuracy"], auc.get(c), ap.get(c), v["support"]]
        for c, v in m["per_class"].items()
    ]
    title = "Test" if name == "test" else "Validation"
    return (
        f'<section id="metrics-{name}"><h3>{title} split</h3><div class="pair">'
        + html_table(["metric", "value"], overall)
        + html_table(["class", "precision", "recall", "f1", "accuracy", "ROC AUC", "avg precision", "support"], per)
        + "</div></section>"
    )


def _figure(run_dir: Path, stem: str, caption: str = "", css: str = "") -> str:
    png = run_dir / "figures" / f"{stem}.png"
    if not png.is_file():
        return ""
    cls = f' class="{css}"' if css else ""
    text = f"<b>{html.escape(FIGURES.get(stem, stem))}</b>" + (f": {caption}" if caption else "")
    return (
        f'<figure id="fig-{stem}"{cls}><figcaption>{text}</figcaption>{img_tag(png, FIGURES.get(stem, stem))}</figure>'
    )


def missing_figures(run_dir: Path, m: dict[str, Any], history: list[dict]) -> list[str]:
    """The figures every run with a report gets (curves with a history, reliability with calibration bins) that are
    not in RUN_DIR/figures/ and were not reported as failed when drawn."""
    errors = m.get("figure_errors", {})
    if "figures" in errors:  # the worker failed before any figure: that notice already says so
        return []
    expected = ["confusion", "per_class"]
    expected += ["curves"] if history else []
    expected += ["reliability"] if "calibration_bins" in m[headline_split(m)] else []
    return [stem for stem in expected if stem not in errors and not (run_dir / "figures" / f"{stem}.png").is_file()]


def _missing_notice(run_dir: Path, missing: list[str]) -> str:
    """A notice naming the expected figures that are not in RUN_DIR/figures/, and how to get them back."""
    if not missing:
        return ""
    names = ", ".join(FIGURES[stem] for stem in missing)
    return (
        f'<div id="figures-missing" class="notice warn"><b>Figures missing:</b> {html.escape(names)} (not in '
        f"<code>{html.escape(str(run_dir / 'figures'))}</code>): they were deleted, or the run was trained without "
        "its report. Retrain the run to draw them again.</div>"
    )


def _figure_errors(errors: dict[str, str], log_file: bool) -> str:
    """A notice naming the figures that could not be drawn, and why."""
    if not errors:
        return ""
    items = "".join(
        f"<li><b>{html.escape(FIGURES.get(stem, stem))}</b>: <code>{html.escape(e)}</code></li>"
        for stem, e in errors.items()
    )
    return (
        f'<div id="warnings" class="notice warn"><b>{len(errors)} figure(s) could not be drawn</b><ul>{items}</ul>'
        "The model and all metrics were saved before the figures were drawn and are unaffected."
        + (" The report worker's log is report-worker.log in the run folder." if log_file else "")
        + "</div>"
    )


CHECK_WORDS = {
    "duplicate across splits": "identical file(s) in two splits: a leak that inflates the scores",
    "duplicate across classes": "identical file(s) under two classes",
    "duplicate within class": "duplicate file(s) within a class",
    "near-duplicate": "group(s) of near-duplicate images",
    "class imbalance": "class(es) much smaller than the largest",
    "unreadable": "unreadable file(s)",
    "skipped": "file(s) skipped",
}


def _data_check(check: dict[str, int] | None, root: str) -> str:
    """The data check recorded at the start of training as a notice: red for a leak, amber for anything else."""
    if check is None:
        return ""
    if not check:
        return (
            '<div id="data-check" class="notice ok">Data check: no unreadable files, duplicates, leaks or class '
            "imbalance found.</div>"
        )
    found = "; ".join(f"{n} {CHECK_WORDS.get(kind, kind)}" for kind, n in check.items())
    level = "bad" if "duplicate across splits" in check or "duplicate across classes" in check else "warn"
    return (
        f'<div id="data-check" class="notice {level}"><b>Data check:</b> {html.escape(found)}. Details: '
        f"<code>smallvision check {html.escape(root)}</code></div>"
    )


def auto_decisions(m: dict[str, Any], run_dir: Path) -> list[str]:
    """What `auto` planned and chose, one sentence per decision (metrics.json's `decisions`), the plan's
    estimate against the run's measured seconds first; empty for the other recipes."""
    from smallvision.recipe_specs import recipes_where
    from smallvision.results import decisions

    if m.get("recipe") not in recipes_where("plans"):
        return []
    plan_file = run_dir / "checkpoints" / "auto_plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else None
    out = [d.text for d in decisions(m) if d.kind != "plan-file"]  # the plan itself is told from its file
    if plan is not None and "steps" in plan:
        took = f"; the run took {m['seconds']:.0f} s" if "seconds" in m else ""
        steps = "; ".join(s["step"] for s in plan["steps"])
        out.insert(
            0,
            f"The plan, made before the expensive work from throughput timed on warm-up batches: {steps} "
            f"(estimated {plan['estimate_seconds']:.0f} s of its {plan['time_budget']:g} s --time-budget{took}).",
        )
    elif not out:
        out.append(
            "auto recorded no plan and no decision (no checkpoints/auto_plan.json, no decisions in metrics.json)."
        )
    return [_sentence(s) for s in out]


def _sentence(text: str) -> str:
    """`text` ending with a full stop."""
    return text if text.endswith(".") else text + "."


def _auto_section(m: dict[str, Any], run_dir: Path) -> str:
    decisions = auto_decisions(m, run_dir)
    if not decisions:
        return ""
    items = "".join(f"<li>{html.escape(d)}</li>" for d in decisions)
    return f'<section id="auto-decisions"><h2>How auto chose</h2><ul class="notes">{items}</ul></section>'


def _where(m: dict[str, Any], split: str) -> tuple[str, str]:
    """The headline split in words, and (for a validation headline) a notice of what was chosen on it and how to get
    an untouched estimate."""
    if split == "test":
        return "the test split, evaluated once after choosing on validation", ""
    caveat = validation_caveat(headline_values(m))
    if caveat:
        return (
            "the validation split",
            f'<div class="notice warn" id="selection">{html.escape(caveat[0].upper() + caveat[1:])}.</div>',
        )
    if test_held_back(m):
        return f"the validation split ({HELD_BACK}; this is the split the model was chosen on)", ""
    return "the validation split (there is no test split: this is the split the model was chosen on)", ""


def _verdict(run_dir: Path, m: dict[str, Any], missing: list[str]) -> str:
    split = headline_split(m)
    s = m[split]
    lo, hi = accuracy_interval(s)
    name = "Test accuracy" if split == "test" else "Validation accuracy"
    where, notice = _where(m, split)
    facts = [["macro F1", f"{s['f1_macro']:.3f}"]]
    if split == "test":
        v = m["val"]
        vlo, vhi = accuracy_interval(v)
        words = selection_words(m.get("selection"))
        shown = f"{pct(v['accuracy'])} ({pct(vlo)} to {pct(vhi)}, n={v['n']})"
        facts.append(["validation", shown + (f", {words}" if words else "")])
    if "ece" in s:
        facts.append(["calibration", f"ECE {s['ece']:.3f} (15 bins)"])
    facts += [
        ["recipe", m["recipe"]],
        ["backbone", m["backbone"]],
        ["time", f"{duration(m.get('seconds', 0))} on {m.get('device', '?')}"],
        ["classes", f"{len(m['classes'])}: {', '.join(m['classes'][:8])}{' ...' if len(m['classes']) > 8 else ''}"],
    ]
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    from smallvision.results import decisions

    final = next((d.text for d in decisions(m) if d.kind == "final"), None)
    auto = final and _sentence(final)
    card = (
        f'<div class="card" id="verdict-card"><div class="label">{name}</div>'
        f'<div class="big" id="headline">{pct(s["accuracy"])}</div>'
        f'<div class="ci">95% interval <b>{pct(lo)} to {pct(hi)}</b> on <b>n={s["n"]}</b> images of {where}; '
        f"one image is {100 / max(s['n'], 1):.1f} points.</div>"
        + notice
        + f'<dl class="facts">{dl}</dl>'
        + (
            f'<p class="auto" id="auto">auto\'s {html.escape(auto)} <a href="#auto-decisions">Why</a></p>'
            if auto
            else ""
        )
        + _data_check(m.get("data_check"), m.get("data", {}).get("root", ""))
        + _figure_errors(m.get("figure_errors", {}), (run_dir / "report-worker.log").is_file())
        + _missing_notice(run_dir, missing)
        + "</div>"
    )
    return f'<section id="verdict" class="verdict">{card}{_figure(run_dir, "confusion", "", "cm")}</section>'


def _versions(run_dir: Path, m: dict[str, Any]) -> list[list[Any]]:
    card = run_dir / "model" / "smallvision.json"
    versions = json.loads(card.read_text()).get("versions", {}) if card.is_file() else {}
    rows = [["device", m.get("device", "")], ["weights", m.get("weights", "")]]
    rows += [[k, v] for k, v in m.get("machine", {}).items()]
    return rows + [[k, v] for k, v in versions.items()]


def write_report(run_dir: str | Path) -> Path:
    """Render RUN_DIR/report.html from metrics.json, config.yaml and figures/*.png (all embedded); a compare folder
    (results.json, no metrics.json) gets its compare page."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file() and (run_dir / "results.json").is_file():
        return write_compare_report(run_dir)
    m = read_summary(run_dir / "metrics.json")
    if m.get("task") == "multi_label":
        from smallvision.evaluation.multilabel_report import write_multilabel_report

        return write_multilabel_report(run_dir, m)
    split = headline_split(m)
    s = m[split]
    history = _history(run_dir)
    kept = chosen_row(history, m.get("best_epoch"), m.get("kept_stage"))
    missing = missing_figures(run_dir, m, history)
    if missing:
        log.warning(
            "warning: %s: figure(s) missing from %s: %s; they were deleted, or the run was trained without its "
            "report: retrain the run to draw them again",
            run_dir / "report.html",
            run_dir / "figures",
            ", ".join(missing),
        )
    on = f"on the {'test' if split == 'test' else 'validation'} split (n={s['n']})"
    body = [
        _verdict(run_dir, m, missing),
        _auto_section(m, run_dir),
        *_mistakes_section(run_dir, s, on, kept),
        *_calibration_section(run_dir, s, on),
        *_details_section(run_dir, m),
    ]
    data = m.get("data", {})
    header = (
        f"<b>smallvision run {html.escape(run_dir.name)}</b>"
        f"<span>{html.escape(m['recipe'])} · {html.escape(m['backbone'])} · {html.escape(data.get('root', ''))}</span>"
    )
    path = run_dir / "report.html"
    atomic.write_text(path, page(f"smallvision run {run_dir.name}", header, body))
    return path


def _mistakes_section(run_dir: Path, s: dict, on: str, kept: int | None) -> list[str]:
    """Training curves with the kept epoch, the most confused pairs, the top losses and Grad-CAM."""
    confused = s.get("most_confused", [])[:10]
    return [
        '<section id="next"><h2>Training and mistakes</h2>',
        _figure(run_dir, "curves", f"the run kept the weights of epoch {kept} (marked)" if kept else ""),
        '<div class="grid2">',
        _figure(run_dir, "confused", f"{on}; the most frequent (true, predicted) pairs with examples"),
        _figure(run_dir, "top_losses", f"{on}; the highest-loss images with true, predicted and confidence"),
        "</div>",
        (
            '<div id="most-confused">' + html_table(["true", "predicted", "images"], confused) + "</div>"
            if confused
            else '<p id="most-confused">No two classes were confused.</p>'
        ),
        _figure(run_dir, "gradcam", "where the network looked for its prediction"),
        "</section>",
    ]


def _calibration_section(run_dir: Path, s: dict, on: str) -> list[str]:
    """The reliability diagram and the ROC / precision-recall curves of the judged split."""
    ece = f"{on}; expected calibration error {s['ece']:.3f}: bars under the diagonal are over-confident"
    return [
        '<section id="calibration"><h2>Calibration and ranking</h2><div class="grid2">',
        _figure(run_dir, "reliability", ece if "ece" in s else ""),
        _figure(run_dir, "roc_pr", f"{on}; macro ROC AUC {fmt(s.get('roc_auc_macro'))}"),
        "</div></section>",
    ]


def _details_section(run_dir: Path, m: RunSummary) -> list[str]:
    """The metric tables, the data, kernels and augmentation, the run's notes, its config, versions and machine."""
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    data = m.get("data", {})
    counts = data.get("counts", {})
    splits = list(counts)
    skipped = data.get("skipped", [])
    return [
        '<section id="details"><h2>Details</h2><h3>Metrics</h3>',
        *(_split_section(sp, m[sp]) for sp in ("val", "test") if sp in m),
        _figure(run_dir, "per_class"),
        '<section id="data"><h3>Data</h3>',
        f"<p>{html.escape(data.get('root', ''))} ({html.escape(data.get('layout', ''))})</p>",
        html_table(["class", *splits], [[c] + [counts[sp].get(c, 0) for sp in splits] for c in m["classes"]]),
        (
            f"<p>{len(skipped)} file(s) skipped:</p>"
            + html_table(["path", "reason"], [[x["path"], x["reason"]] for x in skipped])
        )
        if skipped
        else "<p>No files skipped.</p>",
        "</section>",
        '<div class="grid2">',
        _figure(run_dir, "kernels"),
        _figure(run_dir, "augmentation", "one image as training saw it"),
        "</div>",
        '<section id="how"><h3>How it ran</h3><ul class="notes">',
        *(f"<li>{html.escape(n)}</li>" for n in [*data.get("notes", []), *m.get("notes", [])]),
        "</ul></section>",
        f'<section id="config"><h3>Resolved config</h3><pre>{html.escape(config)}</pre></section>',
        '<section id="versions"><h3>Versions and machine</h3>' + kv_table(_versions(run_dir, m)),
        "</section></section>",
    ]


def _history(run_dir: Path) -> list[dict]:
    import csv
    import io

    path = run_dir / "history.csv"
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def compare_rows(out: Path, rows: list[dict]) -> list[dict]:
    """A comparison's rows with each run's validation n and 95% interval (of accuracy, or of a multi-label run's
    macro mAP), read from its metrics.json."""
    full = []
    for r in rows:
        m = read_summary(Path(out) / "runs" / r["run"] / "metrics.json")["val"]
        interval = m["map_macro_ci95"] if "map_macro_ci95" in m else accuracy_interval(m)
        full.append({**r, "val_n": m["n"], "val_ci95": list(interval)})
    return full


def _compare_table(rows: list[dict], best: str) -> str:
    """The compare page's sortable table of runs, the chosen one marked, each linking to its own page."""
    body_rows = []
    key, name, second, second_name = score_of(rows[0])
    for number, r in enumerate(rows, 1):
        lo, hi = r["val_ci95"]
        link = f"runs/{html.escape(r['run'])}/report.html"
        mark = " &#9733; chosen" if r["run"] == best else ""
        cells = [
            f'<td data-v="{number}" class="t">{number}{mark}</td>',
            f'<td class="t"><a href="{link}">{html.escape(r["run"])}</a></td>',
            f'<td class="t">{html.escape(r["recipe"])}</td><td class="t">{html.escape(r["options"] or "-")}</td>',
            f'<td data-v="{r[key]}">{r[key]:.4f} <small>({lo:.3f} to {hi:.3f})</small></td>',
            f'<td data-v="{r[second]}">{r[second]:.4f}</td>',
            f'<td data-v="{r["seconds"]}">{r["seconds"]:.1f}</td>',
        ]
        cls = ' class="chosen"' if r["run"] == best else ""
        body_rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    heads = ["#", "run", "recipe", "options", f"val {name} (95% interval)", second_name, "seconds"]
    return (
        '<div class="scroll"><table id="runs" class="sortable"><thead><tr>'
        + "".join(f"<th{' class=t' if i < 4 else ''}>{html.escape(h)}</th>" for i, h in enumerate(heads))
        + f"</tr></thead><tbody>{''.join(body_rows)}</tbody></table></div>"
    )


def _compare_headline(results: dict, chosen: dict) -> str:
    """The compare page's headline: the chosen run's test accuracy when it was tested, else its validation one,
    saying that it is the number the run was chosen on."""
    test = results.get("best_test")
    key, name, _, _ = score_of(chosen)
    if test and test.get("task") == "multi_label":
        tlo, thi = test["map_macro_ci95"]
        return (
            f'<div class="label">Test macro mAP of the chosen run</div><div class="big" id="headline">'
            f'{pct(test["map_macro"])}</div><div class="ci">95% interval <b>{pct(tlo)} to {pct(thi)}</b> on '
            f"<b>n={test['n']}</b> test images, evaluated once, for the chosen run only; sample F1 "
            f"{test['f1_samples']:.3f}.</div>"
        )
    if test:
        tlo, thi = accuracy_interval(test)
        return (
            f'<div class="label">Test accuracy of the chosen run</div><div class="big" id="headline">'
            f'{pct(test["accuracy"])}</div><div class="ci">95% interval <b>{pct(tlo)} to {pct(thi)}</b> on '
            f"<b>n={test['n']}</b> test images, evaluated once, for the chosen run only; macro F1 "
            f"{test['f1_macro']:.3f}.</div>"
        )
    lo, hi = chosen["val_ci95"]
    return (
        f'<div class="label">Validation {name} of the chosen run</div><div class="big" id="headline">'
        f'{pct(chosen[key])}</div><div class="ci">95% interval <b>{pct(lo)} to {pct(hi)}</b> '
        f"on <b>n={chosen['val_n']}</b> validation images, the split the run was chosen on: "
        + html.escape(results.get("test_note", "there is no test split to confirm it"))
        + ".</div>"
    )


def write_compare_report(out: str | Path) -> Path:
    """Render COMPARE_DIR/report.html from results.json, the runs' metrics.json and figures/*.png (embedded)."""
    out = Path(out)
    results = json.loads((out / "results.json").read_text())
    rows = compare_rows(out, results["rows"])
    best = results["best"]
    chosen = next(r for r in rows if r["run"] == best)
    table = _compare_table(rows, best)
    lo, _ = chosen["val_ci95"]
    headline = _compare_headline(results, chosen)
    overlap = [r["run"] for r in rows if r["run"] != best and r["val_ci95"][1] >= lo]
    facts = [
        ["chosen", f"{best} ({chosen['recipe']}{', ' + chosen['options'] if chosen['options'] else ''})"],
        ["why", f"highest {results.get('chosen_on', 'validation accuracy')}: {chosen[score_of(chosen)[0]]:.4f}"],
        ["runs", f"{len(rows)}, {duration(sum(r['seconds'] for r in rows))} of training in all"],
    ]
    if overlap:
        facts.append(["note", f"{len(overlap)} other run(s) have intervals that overlap the chosen run's lower bound"])
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    card = f'<div class="card" id="verdict-card">{headline}<dl class="facts">{dl}</dl></div>'
    body = [
        f'<section id="verdict" class="verdict">{card}',
        _figure(out, "accuracy", "the validation score and its interval against training seconds; numbers are rows"),
        "</section>",
        '<section id="results"><h2>Runs</h2><p>Click a column header to sort. Each run links to its own page.</p>',
        table,
        f'<p id="test-note">Test: {html.escape(results["test_note"])}</p>' if "test_note" in results else "",
        "</section>",
        '<section id="overlaid"><h2>Curves, overlaid</h2>',
        _figure(out, "curves", "the validation score and loss per epoch of every run"),
        "</section>",
    ]
    header = f"<b>smallvision compare</b><span>{html.escape(str(out))}</span>"
    path = out / "report.html"
    atomic.write_text(path, page("smallvision compare", header, body, SORT_SCRIPT))
    return path
