"""Results as HTML for Jupyter (`_repr_html_`): the verdict, the confusion matrix and a link to the full report page.

Plain string building over the values already in memory and the run's own figure (embedded as a data URI), so
displaying a result in a notebook imports nothing heavy and needs no network.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from smallvision.results import score_of

STYLE = (
    "<style>.sv-result{font-family:system-ui,sans-serif;max-width:760px}.sv-result .sv-big{font-size:1.8em;"
    "font-weight:600}.sv-result table{border-collapse:collapse}.sv-result td,.sv-result th{border:1px solid #ccc;"
    "padding:2px 6px;text-align:right}.sv-result img{max-width:100%}.sv-result .sv-muted{color:#666}</style>"
)


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _link(path: Path, text: str) -> str:
    """A link to a file: relative to the working folder when under it (what Jupyter serves), else a file: URI."""
    path = Path(path).resolve()
    try:
        href = os.path.relpath(path, Path.cwd().resolve())
        if href.startswith(".."):
            raise ValueError(href)
    except ValueError:
        href = path.as_uri()
    anchor = f'<a href="{html.escape(href)}" target="_blank">{html.escape(text)}</a>'
    return f'{anchor} <span class="sv-muted">{_esc(path)}</span>'


def confusion_table(cm: list[list[int]], classes: list[str]) -> str:
    """A confusion matrix as a small HTML table (rows: true class, columns: predicted); the diagonal in bold."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{_esc(classes[i])}</th>"
        + "".join(f"<td>{'<b>' + str(v) + '</b>' if i == j else v}</td>" for j, v in enumerate(row))
        + "</tr>"
        for i, row in enumerate(cm)
    )
    return f"<table><tr><th>true \\ predicted</th>{head}</tr>{rows}</table>"


def _confusion(run_dir: Path | None, split: dict[str, Any], split_name: str, classes: list[str]) -> str:
    """The run's confusion figure (drawn on `split_name`, the run's headline split) embedded when it exists, else the
    table of the `split` shown."""
    figure = Path(run_dir) / "figures" / "confusion.png" if run_dir is not None else None
    if figure is not None and figure.is_file():
        data = base64.b64encode(figure.read_bytes()).decode()
        label = "validation" if split_name == "val" else split_name
        return f'<p>Confusion matrix ({_esc(label)})</p><img src="data:image/png;base64,{data}" alt="confusion matrix">'
    if "confusion_matrix" not in split:
        return ""
    return f"<p>Confusion matrix ({_esc(split_name)})</p>" + confusion_table(split["confusion_matrix"], classes)


def _verdict(label: str, split: dict[str, Any], details: list[str]) -> str:
    if split.get("task") == "multi_label":
        big = f"{split['map_macro']:.1%} {_esc(label)} macro mAP"
        small = f"n={split['n']} images · sample F1 {split['f1_samples']:.3f} · micro mAP {split['map_micro']:.3f}"
    else:
        big = f"{split['accuracy']:.1%} {_esc(label)} accuracy"
        small = f"n={split['n']} images · macro F1 {split['f1_macro']:.3f}"
    return f'<div class="sv-big">{big}</div><div>{small}</div>' + "".join(f"<div>{d}</div>" for d in details)


def run_html(run_dir: Path, model_dir: Path, metrics: dict[str, Any]) -> str:
    """A finished run: test accuracy (else validation), macro F1, recipe/backbone, time, confusion matrix, links."""
    from smallvision.evaluation.report import (
        HELD_BACK,
        headline_split,
        headline_values,
        selection_words,
        test_held_back,
        validation_caveat,
    )

    name = headline_split(metrics)  # the split the run's figures, confusion.png included, are drawn on
    split = metrics[name]
    details = [
        f"recipe <b>{_esc(metrics['recipe'])}</b> · backbone <b>{_esc(metrics['backbone'])}</b> · "
        f"{_esc(metrics['device'])} · {metrics['seconds']:.1f} s",
    ]
    words = selection_words(metrics.get("selection"))
    caveat = validation_caveat(headline_values(metrics))
    if name == "test":
        short, word = ("map", "macro mAP") if "val_map" in metrics else ("accuracy", "accuracy")
        details.append(
            f"validation {word} {metrics[f'val_{short}']:.1%} (n={metrics['val']['n']})"
            + (f", {_esc(words)}" if words else "")
        )
    else:
        details.append(
            _esc(caveat)
            if caveat
            else f"{HELD_BACK}; this is the validation split the best epoch was chosen on"
            if test_held_back(metrics)
            else "no test split: this is the validation split the best epoch was chosen on"
        )
    report = Path(run_dir) / "report.html"
    links = [_link(report, "full report")] if report.is_file() else []
    links.append(_link(model_dir, "model folder"))
    return _page(
        f"smallvision run {Path(run_dir).name}",
        _verdict("test" if name == "test" else "validation", split, details),
        _confusion(run_dir, split, name, metrics["classes"]),
        links,
    )


def evaluation_html(result: dict[str, Any], classes: list[str], card: dict[str, Any], run_dir: Path | None) -> str:
    """An evaluation: accuracy on the split scored (and why that split), macro F1, the model, the confusion matrix."""
    details = [
        f"split <b>{_esc(result['split'])}</b>: {_esc(result['split_reason'])}",
        f"recipe <b>{_esc(card['recipe'])}</b> · backbone <b>{_esc(card['backbone'])}</b> · "
        f"{card['seconds']:.1f} s"
        + (" · test-time augmentation" if result.get("tta") or result.get("model_tta") else ""),
    ]
    if result.get("skipped"):
        details.append(f"{len(result['skipped'])} unreadable image(s) skipped")
    report = Path(run_dir) / "report.html" if run_dir is not None else None
    links = [_link(report, "the model's run report")] if report is not None and report.is_file() else []
    body = _confusion(None, result, result["split"], classes)
    return _page(f"smallvision evaluate {result['data']}", _verdict(result["split"], result, details), body, links)


def compare_html(result: dict[str, Any]) -> str:
    """A comparison: the chosen run and why, its test accuracy, every run's val accuracy, macro F1 and seconds."""
    out = Path(result["out"])
    best = next(r for r in result["rows"] if r["run"] == result["best"])
    key, name, second, second_name = score_of(best)
    test = result.get("best_test")
    details = [f"chosen on {_esc(result['chosen_on'])}; {len(result['rows'])} runs in {result['seconds']:.1f} s"]
    if test:
        verdict = _verdict(f"test ({best['run']})", test, details)
    else:
        details.insert(0, _esc(result.get("test_note", "no test split evaluated")))
        verdict = f'<div class="sv-big">{best[key]:.1%} validation {name} ({_esc(best["run"])})</div>' + "".join(
            f"<div>{d}</div>" for d in details
        )
    rows = "".join(
        f"<tr><td style='text-align:left'>{'<b>' + _esc(r['run']) + '</b>' if r is best else _esc(r['run'])}</td>"
        f"<td>{r[key]:.4f}</td><td>{r[second]:.4f}</td><td>{r['seconds']:.1f}</td></tr>"
        for r in result["rows"]
    )
    table = f"<table><tr><th>run</th><th>val {name}</th><th>{second_name}</th><th>seconds</th></tr>{rows}</table>"
    best_dir = out / "runs" / best["run"]
    body = table + _confusion(best_dir, {}, "validation", [])
    report = out / "report.html"
    links = [_link(report, "full comparison")] if report.is_file() else []
    links.append(_link(best_dir / "report.html", f"report of {best['run']}"))
    return _page(f"smallvision compare {out.name}", verdict, body, links)


def _page(title: str, verdict: str, body: str, links: list[str]) -> str:
    return (
        f'{STYLE}<div class="sv-result"><div class="sv-muted">{_esc(title)}</div>{verdict}{body}'
        f"<p>{' · '.join(links)}</p></div>"
    )
