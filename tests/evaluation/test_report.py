"""Report pages (first screen, figures, widths and sorting, in headless Chromium through Selenium), the weights
check, evaluate, and compare (re-runs skip finished runs)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

import smallvision
from smallvision.errors import SmallvisionError
from tests.conftest import shared_dataset, skip_unless_ci
from tests.runs import assert_figures_not_blank, first_conv_kernels

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENS = ((1280, 800), (390, 844))


@pytest.fixture(scope="module")
def run(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    return smallvision.train(
        shapes_data,
        recipe="finetune",
        backbone="efficientnet_lite0",
        out=out,
        image_size=64,
        epochs=4,
        finetune_epochs=2,
        progress=False,
    )


@pytest.fixture(scope="module")
def hymenoptera_run(tmp_path_factory, session_cache):
    """A features run on a few real hymenoptera photos (linked, not copied), 64 px: seconds."""
    source = shared_dataset("hymenoptera")
    data = tmp_path_factory.mktemp("hym") / "hymenoptera"
    for split, per_class in (("train", 16), ("val", 12)):
        for cls in ("ants", "bees"):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((source / split / cls).glob("*.jpg"))[:per_class]:
                (data / split / cls / f.name).symlink_to(f)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
        return smallvision.train(
            data, recipe="features", image_size=64, epochs=4, out=data.parent / "hymenoptera-run", progress=False
        )


@pytest.fixture(scope="module")
def compared(shapes_data, tmp_path_factory, session_cache):
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    kw = {
        "recipes": "features",
        "sweep": ["dropout=0,0.5"],
        "out": out,
        "image_size": 64,
        "epochs": 5,
        "progress": False,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
        return out, kw, smallvision.compare(shapes_data, **kw)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Debian's chromedriver (Selenium Manager never downloads anything)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        skip_unless_ci("Debian's chromium and chromedriver are not installed in /usr/bin (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _open(driver, page: Path, width: int, height: int) -> None:
    """Load `page` in a viewport of exactly width x height CSS pixels (a phone's below 600 px) and wait for its
    images to report."""
    from selenium.webdriver.support.ui import WebDriverWait

    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.get(page.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.rendered !== undefined"))
    assert driver.execute_script("return [innerWidth, innerHeight]") == [width, height]


def _decoded(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:60]  # embedded: the page needs no network
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def _not_blank(rgb: np.ndarray, what: str) -> None:
    colours, counts = np.unique(rgb.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) >= 8, f"{what}: only {len(colours)} colours"
    assert counts.max() < 0.97 * counts.sum(), f"{what}: one colour covers {counts.max() / counts.sum():.0%}"


def check_page(driver, page: Path, shots: Path) -> dict[int, dict]:
    """Open a report page at both screen sizes: screenshots saved and decoded, the verdict within the first screen,
    every image decoded and not blank, nothing wider than the screen. Returns what each width showed."""
    seen = {}
    shots.mkdir(parents=True, exist_ok=True)
    for width, height in SCREENS:
        _open(driver, page, width, height)
        state = driver.execute_script(
            "const box=id=>{const e=document.getElementById(id);if(!e)return null;const r=e.getBoundingClientRect();"
            "return [r.left,r.top,r.right,r.bottom]};"
            "return {scroll: document.documentElement.scrollWidth, inner: innerWidth, verdict: box('verdict-card'),"
            "headline: box('headline'), beside: box('fig-confusion') || box('fig-accuracy'),"
            "images: [...document.images].map(i=>[i.alt, i.naturalWidth, i.naturalHeight, i.src])}"
        )
        assert state["scroll"] <= state["inner"] == width, f"{page} overflows at {width} px"
        left, top, right, bottom = state["verdict"]
        assert top >= 0 and bottom <= height and left >= 0 and right <= width, (width, state["verdict"])
        assert state["images"], "no figures"
        for alt, natural_w, natural_h, src in state["images"]:
            assert natural_w > 0 and natural_h > 0, f"{alt} did not decode in the browser"
            _not_blank(_decoded(src), alt)
        shot = shots / f"{page.parent.name}-{width}x{height}.png"
        assert driver.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"))
        assert pixels.shape[:2] == (height, width)
        _not_blank(pixels, shot.name)
        seen[width] = state
    keep = os.environ.get("SMALLVISION_SCREENSHOTS")  # a folder to keep the screenshots in, for a person to look at
    if keep:
        for shot in shots.glob(f"{page.parent.name}-*.png"):
            shutil.copy(shot, Path(keep) / shot.name)
    return seen


def test_run_report_first_screen_images_and_widths_in_chromium(run, browser, tmp_path):
    page = run.run_dir / "report.html"
    seen = check_page(browser, page, tmp_path)
    wide = seen[1280]
    assert wide["beside"][3] <= 800 and wide["beside"][0] > wide["verdict"][2]  # the confusion matrix beside it
    narrow = seen[390]
    assert narrow["beside"][1] >= narrow["verdict"][3]  # stacked below on a phone
    alts = {alt for alt, *_ in wide["images"]}
    assert {"Training curves", "Reliability diagram", "ROC and precision-recall curves", "Grad-CAM"} <= alts
    text = browser.find_element("id", "verdict-card").text
    m = run.metrics
    assert "TEST ACCURACY" in text.upper() and f"n={m['test']['n']}" in text and "finetune" in text
    lo, hi = m["test"]["accuracy_ci95"]
    assert f"{100 * lo:.1f}% to {100 * hi:.1f}%" in text
    html = page.read_text()
    assert "classification report" not in html and html.count('id="metrics-val"') == 1
    assert "http://" not in html and "https://" not in html  # one self-contained file


def test_hymenoptera_report_in_chromium_and_its_aucs_are_sklearns(hymenoptera_run, browser, tmp_path):
    from sklearn.metrics import average_precision_score, roc_auc_score

    run_dir = hymenoptera_run.run_dir
    seen = check_page(browser, run_dir / "report.html", tmp_path)
    assert {"Most confused pairs", "Top losses", "Reliability diagram"} <= {a for a, *_ in seen[1280]["images"]}
    text = browser.find_element("id", "verdict-card").text
    assert "VALIDATION ACCURACY" in text.upper() and "n=24" in text and "Data check" in text
    m = json.loads((run_dir / "metrics.json").read_text())["val"]
    rows = list(csv.DictReader((run_dir / "predictions_val.csv").open()))
    assert len(rows) == m["n"] == 24
    truth = np.array([r["true"] for r in rows])
    for cls in ("ants", "bees"):
        p = np.array([float(r[f"p_{cls}"]) for r in rows])
        assert m["roc_auc"][cls] == pytest.approx(roc_auc_score(truth == cls, p), abs=1e-12)
        assert m["average_precision"][cls] == pytest.approx(average_precision_score(truth == cls, p), abs=1e-12)
    assert 0 <= m["ece"] <= 1 and len(m["calibration_bins"]) >= 1


def test_a_validation_headline_says_what_was_chosen_on_it_and_how_to_get_an_untouched_estimate(hymenoptera_run):
    """No test split: the report's verdict, the terminal summary and metrics.json say the validation number is the
    best of the epochs in history.csv and name --test-fraction."""
    run_dir = hymenoptera_run.run_dir
    epochs = len(_history_rows(run_dir))
    assert hymenoptera_run.metrics["selection"] == {"split": "val", "choices": epochs, "by": {"epoch": epochs}}
    said = f"the best of {epochs} epochs on it"
    page = (run_dir / "report.html").read_text()
    verdict = page[page.index('id="verdict-card"') : page.index("</dl>")]
    notice = re.search(r'<div class="notice warn" id="selection">(.*?)</div>', verdict).group(1)
    assert notice.startswith("Selected on this split, so it flatters the model") and said in notice
    assert "--test-fraction 0.2" in notice
    lines = hymenoptera_run.summary().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("val accuracy"))
    assert said in lines[at + 1] and "--test-fraction 0.2" in lines[at + 1]


def test_a_test_headline_says_what_validation_was_chosen_among(run):
    """With a test split the verdict, the summary and the model card's headline (the served page's header) lead with
    it; validation's number says it was selected."""
    from smallvision.evaluation.report import headline

    epochs = len(_history_rows(run.run_dir))  # both stages of finetune: the kept weights are the best of them all
    assert run.metrics["selection"] == {"split": "val", "choices": epochs, "by": {"epoch": epochs}} and epochs == 6
    page = (run.run_dir / "report.html").read_text()
    verdict = page[page.index('id="verdict-card"') : page.index("</dl>")]
    assert re.search(rf"<dt>validation</dt><dd>[^<]*n=30\), the best of {epochs} epochs on it</dd>", verdict)
    assert 'id="selection"' not in verdict
    lines = run.summary().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("test accuracy"))
    assert lines[at + 1].startswith("val accuracy") and lines[at + 1].endswith(
        f"selected: the best of {epochs} epochs on it"
    )
    assert "--test-fraction" not in "\n".join(lines)
    card = smallvision.load(run.model_dir)[1].metrics  # what the server's header reads
    assert card["test_accuracy"] == run.metrics["test_accuracy"] and card["selection"] == run.metrics["selection"]
    assert headline(card) == (
        f"test accuracy {100 * run.metrics['test_accuracy']:.1f}% (n=18), untouched until the model was chosen; "
        f"validation {100 * run.metrics['val_accuracy']:.1f}% (n=30), the best of {epochs} epochs on it"
    )


def _history_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "history.csv").open()))


def test_report_rebuilt_from_files_shows_a_leak_on_the_first_screen(hymenoptera_run, browser, tmp_path):
    from smallvision.evaluation.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(hymenoptera_run.run_dir, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["data_check"] = {"duplicate across splits": 2, "class imbalance": 1}  # as _precheck records them
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "report.html").unlink()
    assert write_report(run_dir) == run_dir / "report.html"
    _open(browser, run_dir / "report.html", 1280, 800)
    notice = browser.find_element("id", "data-check")
    assert "notice bad" in notice.get_attribute("class") and "2 identical file(s) in two splits" in notice.text
    assert notice.rect["y"] + notice.rect["height"] <= 800


def test_compare_page_sorts_and_marks_the_chosen_run(compared, browser, tmp_path):
    out, _, result = compared
    page = out / "report.html"
    check_page(browser, page, tmp_path)
    _open(browser, page, 1280, 800)
    chosen = browser.find_element("css selector", "#runs tr.chosen").text
    assert result["best"] in chosen and "chosen" in chosen
    links = [unquote(a.get_attribute("href")) for a in browser.find_elements("css selector", "#runs a")]
    assert sorted(links) == sorted(unquote((out / "runs" / r["run"] / "report.html").as_uri()) for r in result["rows"])

    def column(i: int) -> list[str]:
        return [
            td.get_attribute("data-v") or td.text
            for td in browser.find_elements("css selector", f"#runs td:nth-child({i})")
        ]

    headers = browser.find_elements("css selector", "#runs th")
    headers[6].click()  # seconds
    up = [float(v) for v in column(7)]
    assert up == sorted(up)
    headers[6].click()
    assert [float(v) for v in column(7)] == sorted(up, reverse=True)
    headers[1].click()  # run names, as text
    names = column(2)
    assert names == sorted(names, key=str.lower) and set(names) == {r["run"] for r in result["rows"]}


def test_every_report_figure_decodes_and_is_not_blank(run):
    names = assert_figures_not_blank(run.run_dir, first_conv_kernels(run.model_dir))
    confused = {"confused"} if run.metrics["test"]["most_confused"] else set()
    assert (
        set(names)
        == {
            "curves",
            "confusion",
            "per_class",
            "top_losses",
            "gradcam",
            "kernels",
            "augmentation",
            "reliability",
            "roc_pr",
        }
        | confused
    )


def test_weights_check_flags_a_moved_frozen_layer(run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(run.model_dir, model_dir)
    clean = smallvision.inspect(model_dir, weights_check=True)
    assert "all frozen layers unchanged" in clean and "FROZEN BUT MOVED" not in clean
    state = load_file(str(model_dir / "model.safetensors"))
    state["backbones.0.net.conv_stem.weight"] += 0.01
    save_file(state, str(model_dir / "model.safetensors"))
    moved = smallvision.inspect(model_dir, weights_check=True)
    assert re.search(r"efficientnet_lite0:stem .* False +FROZEN BUT MOVED", moved)
    assert "1 frozen group(s) moved" in moved


def test_inspect_lists_groups_shapes_and_writes_kernels(run, tmp_path):
    text = smallvision.inspect(run.model_dir, kernels=tmp_path / "k.png")
    assert "blocks.6+conv_head+bn2" in text and "trained" in text and "frozen" in text
    assert re.search(r"stem +32x32x32", text)
    assert Image.open(tmp_path / "k.png").size[0] > 100
    bigger = smallvision.inspect(run.model_dir, image_size=128)
    assert re.search(r"stem +32x64x64", bigger) and "output shapes for 128x128 inputs (as asked)" in bigger
    with pytest.raises(SmallvisionError, match="image size 0"):
        smallvision.inspect(run.model_dir, image_size=0)


def test_evaluate_matches_training_metrics_and_names_unknown_classes(run, shapes_data, tmp_path):
    m = smallvision.evaluate(run.model_dir, shapes_data, split="test")
    assert m["accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    tta = smallvision.evaluate(run.model_dir, shapes_data / "test", tta=True)
    assert tta["tta"] is True and tta["n"] == 18 and tta["split"] == "all"
    odd = tmp_path / "odd"
    (odd / "hexagon").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(odd / "hexagon" / "h.png")
    with pytest.raises(SmallvisionError, match="hexagon"):
        smallvision.evaluate(run.model_dir, odd)


def test_compare_sweep_tests_only_the_best_and_rerun_skips(compared, shapes_data):
    out, kw, first = compared
    assert [r["run"] for r in first["rows"]] == ["features_dropout=0", "features_dropout=0.5"]
    for r in first["rows"]:
        metrics = json.loads((out / "runs" / r["run"] / "metrics.json").read_text())
        assert "test" not in metrics  # only the chosen run sees the test split
    assert first["best_test_accuracy"] is not None
    assert (out / "results.csv").read_text().startswith("run,recipe,options,val_accuracy")
    assert "| features_dropout=0 |" in (out / "results.md").read_text()
    assert (out / "figures" / "accuracy.png").exists() and (out / "report.html").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    again = smallvision.compare(shapes_data, **kw)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["rows"] == first["rows"]
    page = (out / "report.html").read_text()
    assert 'href="runs/features_dropout=0/report.html"' in page


def test_auto_decisions_are_one_sentence_each_after_the_plan_against_the_runs_seconds(tmp_path):
    """The decisions are what auto/execute.py records (metrics.json's `decisions`); the notes' wording is never
    read; the plan is the shape of its auto_plan.json."""
    from smallvision.evaluation.report import auto_decisions, chosen_row

    plan = {
        "time_budget": 600.0,
        "estimate_seconds": 412.4,
        "steps": [{"step": "efficientnet_lite2 features at 260 px + head", "seconds": 129.0}],
    }
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "auto_plan.json").write_text(json.dumps(plan))
    decisions = [
        {"kind": "plan-file", "text": "plan recorded in /x/checkpoints/auto_plan.json: ..."},
        {"kind": "choice", "text": "chose efficientnet_lite2 features among the candidates on validation (0.9)"},
        {"kind": "final", "text": "final model: efficientnet_lite2 features, val accuracy 0.9000"},
    ]
    notes = ["stage features: best epoch 3", "auto: a note, not a decision"]
    m = {"recipe": "auto", "notes": notes, "decisions": decisions, "seconds": 431.7}
    assert auto_decisions(m, tmp_path) == [
        "The plan, made before the expensive work from throughput timed on warm-up batches: efficientnet_lite2 "
        "features at 260 px + head (estimated 412 s of its 600 s --time-budget; the run took 432 s).",
        "chose efficientnet_lite2 features among the candidates on validation (0.9).",
        "final model: efficientnet_lite2 features, val accuracy 0.9000.",
    ]
    assert auto_decisions({**m, "recipe": "features"}, tmp_path) == []
    (tmp_path / "checkpoints" / "auto_plan.json").unlink()
    assert auto_decisions({"recipe": "auto", "notes": notes}, tmp_path) == [
        "auto recorded no plan and no decision (no checkpoints/auto_plan.json, no decisions in metrics.json)."
    ]
    # auto's history ends with the stage whose weights it kept: the kept row counts within that last stage
    history = [{"stage": "features efficientnet_lite2"}] * 4 + [{"stage": "finetune1"}] * 3
    assert chosen_row(history, 2, None) == 6
    # a recipe that kept an earlier stage's weights records it (metrics.json's kept_stage): the row is in that stage
    assert chosen_row(history, 2, "features efficientnet_lite2") == 2


def test_a_compare_run_says_its_test_split_was_held_back_and_the_compare_page_says_why_no_test(compared, tmp_path):
    """Compare's runs have a test split in data.counts but no test metrics; a failed test evaluation shows its note."""
    from smallvision.evaluation.report import HELD_BACK, write_report

    out, _, result = compared
    run_dir = tmp_path / "run"
    shutil.copytree(out / "runs" / result["best"], run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert "test" not in m and "test" in m["data"]["counts"]
    page = write_report(run_dir).read_text()
    assert HELD_BACK in page and "there is no test split" not in page
    cmp_dir = tmp_path / "cmp"
    shutil.copytree(out, cmp_dir)
    results = json.loads((cmp_dir / "results.json").read_text())
    results.pop("best_test", None)
    results["test_note"] = "no test split evaluated (a made-up failure)"
    (cmp_dir / "results.json").write_text(json.dumps(results))
    page = write_report(cmp_dir).read_text()
    assert "chosen on: no test split evaluated (a made-up failure)." in page
    assert "there is no test split to confirm it" not in page


def test_confused_hits_keep_the_most_confident_mistakes_of_each_pair():
    """40 cats taken for dogs with rising confidence: the 16 decoded are the 16 most confident, most confident first."""
    from smallvision.evaluation.report import confused_hits

    p_dog = np.linspace(0.55, 0.95, 40)
    probs = np.stack([1 - p_dog, p_dog], axis=1)
    labels = np.zeros(40, dtype=np.int64)
    (hits,) = confused_hits(labels, probs, ["cat", "dog"], [["cat", "dog", 40]])
    assert hits.tolist() == list(range(39, 23, -1))


def test_a_rebuilt_report_names_the_figures_that_are_missing(run, tmp_path, caplog):
    """`smallvision report RUN_DIR` after figures were deleted: a notice and a warning name them, not a silent gap."""
    from smallvision.evaluation.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(run.run_dir, run_dir)
    assert 'id="figures-missing"' not in write_report(run_dir).read_text()
    (run_dir / "figures" / "confusion.png").unlink()
    (run_dir / "figures" / "curves.png").unlink()
    with caplog.at_level("WARNING", logger="smallvision.evaluation.report"):
        page = write_report(run_dir).read_text()
    notice = re.search(r'<div id="figures-missing"[^>]*>(.*?)</div>', page).group(1)
    assert "Confusion matrix, Training curves" in notice and "Retrain" in notice
    assert "confusion, curves" in caplog.text and "retrain" in caplog.text
