"""Multi-label end to end on generated folders (images holding any of three shapes, listed in labels.csv): training
keeps its epoch on macro mAP, thresholds are chosen on validation and saved, the metrics, report, predictions and
evaluate agree with each other and with what a user reads."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from smallvision import api
from smallvision.errors import SmallvisionError
from smallvision.models.folder import read_card
from tests.imagegen import SHAPES, make_multilabel_folder
from tests.runs import decode_png, history_rows
from tests.serving.test_page import browser  # noqa: F401  (the headless Chromium fixture)
from tests.test_cli import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_multilabel_folder(tmp_path_factory.mktemp("ml") / "shapes", n=90, seed=0)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlrun") / "run"
    return api.train(data, recipe="features", image_size=64, epochs=20, test_fraction=0.2, out=out, progress=False)


def _truth(data: Path) -> dict[str, set[str]]:
    rows = csv.DictReader(io.StringIO((data / "labels.csv").read_text()))
    return {r["filename"]: set(r["labels"].split()) for r in rows}


def test_a_features_run_keeps_its_epoch_on_macro_map_and_saves_its_thresholds(run):
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert m["task"] == "multi_label" and "val_accuracy" not in m
    assert m["val_map"] == m["val"]["map_macro"] > 0.85 and m["test_map"] == m["test"]["map_macro"] > 0.7
    low, high = m["test"]["map_macro_ci95"]
    assert low <= m["test_map"] <= high
    history = history_rows(run.run_dir)
    scores = [float(r["val_map"]) for r in history]
    assert "val_accuracy" not in history[0] and max(scores) == scores[m["best_epoch"] - 1]
    card = read_card(run.model_dir)
    assert card.task == "multi_label" and len(card.thresholds) == 3 and all(0 < t < 1 for t in card.thresholds)
    assert set(m["val"]["per_label"]) == set(SHAPES) and 0 <= m["val"]["hamming_loss"] <= 1
    assert m["val"]["cardinality"]["true"] == pytest.approx(
        sum(v["support"] for v in m["val"]["per_label"].values()) / m["val"]["n"]
    )


def test_the_reported_map_is_scikit_learns_on_the_saved_predictions(run, data):
    rows = list(csv.DictReader((run.run_dir / "predictions_test.csv").open()))
    truth = _truth(data)
    labels = sorted(SHAPES)
    y = np.array([[name in truth[Path(r["path"]).name] for name in labels] for r in rows])
    p = np.array([[float(r[name]) for name in labels] for r in rows])
    m = run.metrics
    assert average_precision_score(y, p, average="macro") == pytest.approx(m["test_map"], abs=1e-5)
    cuts = read_card(run.model_dir).thresholds
    predicted = [set(r["predicted"].split()) for r in rows]
    assert predicted == [{n for n, v, t in zip(labels, row, cuts, strict=True) if v >= t} for row in p]
    assert [set(r["labels"].split()) for r in rows] == [truth[Path(r["path"]).name] for r in rows]


def test_the_report_opens_on_macro_map_and_embeds_its_figures(run):
    page = (run.run_dir / "report.html").read_text()
    verdict = re.search(r"<h1 id='headline'>macro mAP ([\d.]+)% on the test split", page)
    assert verdict and float(verdict.group(1)) == pytest.approx(100 * run.metrics["test_map"], abs=0.05)
    for section in ("rarest", "per-label", "most-wrong", "fig-label_pr", "fig-cooccurrence", "fig-curves"):
        assert f"id='{section}'" in page or f'id="{section}"' in page, section
    assert page.count("data:image/png;base64,") == 4
    for stem in ("label_pr", "cooccurrence", "curves", "label_calibration"):
        image = decode_png(run.run_dir / "figures" / f"{stem}.png")
        assert image.std() > 5, stem  # drawn, not blank


def test_evaluate_on_the_run_folder_reproduces_the_test_split_numbers(run, data):
    m = api.evaluate(run.model_dir, data)
    assert m["split"] == "test" and m["map_macro"] == pytest.approx(run.metrics["test_map"], abs=1e-6)
    assert m["f1_samples"] == pytest.approx(run.metrics["test"]["f1_samples"], abs=1e-6)


def test_evaluate_scores_another_labelled_folder_by_label_name_and_refuses_unknown_labels(run, tmp_path):
    other = make_multilabel_folder(tmp_path / "other", n=40, seed=9)
    m = api.evaluate(run.model_dir, other)
    assert m["split"] == "all" and m["n"] == 40
    assert m["map_macro"] > 0.6
    bad = make_multilabel_folder(tmp_path / "bad", n=10, seed=4, kinds=("circle", "star"))
    with pytest.raises(SmallvisionError, match="label\\(s\\) star unknown to the model"):
        api.evaluate(run.model_dir, bad)


def test_a_single_label_model_is_refused_a_multi_label_folder(data, tmp_path):
    from tests.imagegen import make_class_folder

    folders = make_class_folder(tmp_path / "shapes", per_class=12, seed=1)
    single = api.train(folders, recipe="features", image_size=64, epochs=2, out=tmp_path / "s", progress=False)
    with pytest.raises(SmallvisionError, match="this model is single-label"):
        api.evaluate(single.model_dir, data)


def test_evaluate_reads_the_labels_file_the_run_trained_with(data, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(data / "images", moved / "images")
    lines = (data / "labels.csv").read_text().splitlines()
    (tmp_path / "tags.csv").write_text("\n".join([lines[0], *(f"images/{r}" for r in lines[1:])]) + "\n")
    args = dict(recipe="features", image_size=64, epochs=5, test_fraction=0.2, progress=False, report=False)
    monkeypatch.chdir(tmp_path)  # a relative --labels, saved as the file it named
    trained = api.train(moved, labels="tags.csv", out=tmp_path / "r", **args)
    monkeypatch.chdir(moved)
    m = api.evaluate(trained.model_dir, moved)
    assert m["split"] == "test" and m["map_macro"] == pytest.approx(trained.metrics["test_map"], abs=1e-6)


def test_evaluate_refuses_a_folder_with_no_labelled_image_and_flags_tuned_thresholds(run, data, tmp_path):
    negatives = make_multilabel_folder(tmp_path / "neg", n=8, seed=7)
    names = [r.split(",")[0] for r in (negatives / "labels.csv").read_text().splitlines()[1:]]
    (negatives / "labels.csv").write_text("\n".join(["filename,labels", *(f"{n}," for n in names)]) + "\n")
    with pytest.raises(SmallvisionError, match="none of the 8 images scored has any of the labels"):
        api.evaluate(run.model_dir, negatives, split="all")
    val = cli("evaluate", run.model_dir, data, "--split", "val")
    assert val.returncode == 0 and "thresholds (and the kept epoch) were chosen on these images" in val.stdout
    test = cli("evaluate", run.model_dir, data)
    assert test.returncode == 0 and "chosen on these images" not in test.stdout


def test_predict_gives_labels_at_the_models_thresholds_or_the_ones_given(run, data, tmp_path):
    images = sorted((data / "images").iterdir())[:6]
    preds = api.predict(run.model_dir, images)
    cuts = dict(zip(sorted(SHAPES), read_card(run.model_dir).thresholds, strict=True))
    for p in preds:
        assert {n for n, _ in p.labels} == {n for n, v in p.scores.items() if v >= cuts[n]}
    strict = api.predict(run.model_dir, images, threshold=0.999)
    assert sum(len(p.labels) for p in strict) < sum(len(p.labels) for p in preds)
    file = tmp_path / "t.csv"
    file.write_text("label,threshold\ncircle,0.01\n")
    loose = api.predict(run.model_dir, images, threshold=file)
    assert all("circle" in {n for n, _ in p.labels} for p in loose)
    file.write_text("label,threshold\nunicorn,0.5\n")
    with pytest.raises(SmallvisionError, match="label\\(s\\) the model does not have: unicorn"):
        api.predict(run.model_dir, images, threshold=file)


def test_the_cli_prints_label_sets_and_writes_one_probability_column_per_label(run, data):
    image = sorted((data / "images").iterdir())[0]
    done = cli("predict", run.model_dir, image, "--csv", "-", "--threshold", "0.5")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["path", "labels", *sorted(SHAPES), "error"]
    assert set(rows[0]["labels"].split()) == {n for n in SHAPES if float(rows[0][n]) >= 0.5}
    shown = cli("predict", run.model_dir, image)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{image}: ")


def test_a_multi_label_folder_refuses_label_smoothing_and_per_class_minimums(data, tmp_path):
    with pytest.raises(SmallvisionError, match="--label-smoothing 0.1: .* is multi-label"):
        api.train(data, recipe="features", label_smoothing=0.1, out=tmp_path / "a", progress=False)
    with pytest.raises(SmallvisionError, match="--min-val-per-class: a multi-label split is carved by share"):
        api.train(data, recipe="features", min_val_per_class=2, out=tmp_path / "b", progress=False)


def test_an_end_to_end_stage_on_lightning_scores_macro_map_per_epoch(data, tmp_path):
    run = api.train(
        data,
        recipe="scratch",
        image_size=32,
        epochs=3,
        precision="32-true",  # validated as the saved model runs: the epoch's score is the saved model's, exactly
        out=tmp_path / "scratch",
        progress=False,
        report=False,
    )
    history = history_rows(run.run_dir)
    assert [r["epoch"] for r in history] == ["1", "2", "3"] and {"train_map", "val_map"} <= set(history[0])
    kept = float(history[run.metrics["best_epoch"] - 1]["val_map"])
    assert kept == max(float(r["val_map"]) for r in history)
    # the epoch's mAP (Lightning, over the gathered logits) is the saved model's mAP on validation
    assert run.metrics["val_map"] == pytest.approx(kept, abs=1e-4)


def _mean_circle(run, images: list[Path]) -> float:
    return float(np.mean([p.scores["circle"] for p in api.predict(run.model_dir, images)]))


def test_class_weights_and_the_asymmetric_loss_reach_the_head(run, data, tmp_path):
    """With circle made rare, balanced weights (its negatives over positives, about 8) raise its predicted
    probability; the asymmetric loss down-weights easy negatives, so its training loss is far below BCE's."""
    rows = [r.split(",") for r in (data / "labels.csv").read_text().splitlines()[1:]]
    circles = [r for r in rows if "circle" in r[1].split()]
    kept = [r for r in rows if "circle" not in r[1].split()] + circles[:6]
    rare = tmp_path / "rare"
    (rare / "images").mkdir(parents=True)
    for name, _ in kept:
        shutil.copy(data / "images" / name, rare / "images" / name)
    (rare / "labels.csv").write_text("\n".join(["filename,labels", *(",".join(r) for r in kept)]) + "\n")
    args = dict(recipe="features", image_size=64, epochs=20, progress=False, report=False)
    plain = api.train(rare, out=tmp_path / "p", **args)
    weighted = api.train(rare, class_weights="balanced", out=tmp_path / "w", **args)
    shown = [data / "images" / r[0] for r in circles[6:26]]  # circles neither run trained on
    assert _mean_circle(weighted, shown) > _mean_circle(plain, shown) + 0.1
    asl = api.train(data, loss="asl", out=tmp_path / "asl", test_fraction=0.2, **args)
    assert "loss: asl" in (asl.run_dir / "config.yaml").read_text()
    first = [float(history_rows(r.run_dir)[0]["train_loss"]) for r in (run, asl)]
    assert first[1] < 0.5 * first[0]
    assert asl.metrics["val_map"] > 0.8


def test_balanced_class_weights_are_each_labels_negatives_over_positives():
    from smallvision.engine.stage import class_weight_tensor

    targets = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert class_weight_tensor("balanced", targets, 2).tolist() == pytest.approx([1 / 3, 3.0])


def test_the_onnx_export_has_the_sigmoid_and_thresholds_and_is_checked_in_onnxruntime(run, data):
    from smallvision.runtime import OnnxClassifier

    result = api.export(run.model_dir, "onnx")
    check = result["record"]["onnx"]["check"]
    assert check["passed"] and check["labels_agreement"] == 1.0 and check["max_abs_diff"] <= 1e-4
    clf = OnnxClassifier.load(result["path"])
    assert clf.card["task"] == "multi_label" and clf.card["thresholds"] == read_card(run.model_dir).thresholds
    images = sorted((data / "images").iterdir())[:8]
    onnx = api.predict(run.model_dir, images, onnx=True)
    torch_preds = api.predict(run.model_dir, images)
    assert [p.labels and [n for n, _ in p.labels] for p in onnx] == [
        p.labels and [n for n, _ in p.labels] for p in torch_preds
    ]
    rows = np.array([list(p.scores.values()) for p in onnx])
    assert not np.allclose(rows.sum(1), 1.0)  # independent sigmoids, not a softmax
    assert np.abs(rows - np.array([list(p.scores.values()) for p in torch_preds])).max() <= 1e-4


def test_the_server_answers_the_label_set_and_the_page_shows_it_as_chips(run, data, browser):  # noqa: F811
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from smallvision.serving import create_app
    from tests.serving.conftest import running

    api.export(run.model_dir)
    cuts = read_card(run.model_dir).thresholds
    picked = sorted((data / "images").iterdir())[:2]
    with running(create_app(run.model_dir)) as url:
        info = httpx.get(f"{url}/model").json()
        assert info["task"] == "multi_label" and info["thresholds"] == cuts
        assert info["headline"].startswith(f"test macro mAP {100 * run.metrics['test_map']:.1f}%")
        answers = {}
        for image in picked:
            got = httpx.post(f"{url}/predict", files={"files": (image.name, image.read_bytes())}).json()
            p = got["predictions"][0]
            above = {n for (n, v), t in zip(p["probabilities"].items(), cuts, strict=True) if v >= t}
            assert {e["label"] for e in p["labels"]} == above
            answers[image.name] = [e["label"] for e in p["labels"]]
        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "macro mAP" in d.find_element(By.ID, "model-line").text)
        assert browser.find_element(By.ID, "classes").text.startswith("Labels (any number per picture): ")
        assert "thresholded-label agreement 100.0%" in browser.find_element(By.ID, "export-line").text
        browser.find_element(By.ID, "picker").send_keys("\n".join(str(p) for p in picked))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card[data-state='done']")) == 2)
        for card in browser.find_elements(By.CSS_SELECTOR, "#results .card"):
            name = card.find_element(By.CSS_SELECTOR, ".name").text
            chips = [c.text.rsplit(" ", 1)[0] for c in card.find_elements(By.CSS_SELECTOR, ".chip")]
            assert chips == answers[name] and card.get_attribute("data-labels") == " ".join(answers[name])


def test_check_flags_label_sets_that_were_swapped_and_a_label_that_is_always_alone(tmp_path):
    root = make_multilabel_folder(tmp_path / "noisy", n=80, seed=11)
    lines = (root / "labels.csv").read_text().splitlines()
    swapped = []
    for row in (5, 17, 29, 41):  # each image gets the complement of its label set
        name, labels = lines[row].split(",")
        lines[row] = f"{name},{' '.join(k for k in SHAPES if k not in labels.split())}"
        swapped.append(name)
    for row in (50, 60):
        lines[row] = lines[row].split(",")[0] + ",unicorn"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    report = api.check(root, image_size=64, progress=False)
    doubted = [Path(f["paths"][0]).name for f in report["findings"] if f["kind"] == "probably mislabeled"]
    assert len(set(swapped) & set(doubted[:10])) >= 3, doubted
    alone = [f for f in report["findings"] if f["kind"] == "label always alone"]
    assert [f["paths"] for f in alone] == [["unicorn"]]


def test_compare_ranks_multi_label_runs_by_validation_macro_map_and_tests_the_chosen_one(data, tmp_path):
    out = tmp_path / "cmp"
    result = api.compare(
        data, recipes="features", sweep=["lr=1e-4,3e-3"], out=out, image_size=64, epochs=8, test_fraction=0.2
    )
    rows = result["rows"]
    assert all("val_map" in r and "val_accuracy" not in r for r in rows)
    assert result["best"] == max(rows, key=lambda r: (r["val_map"], -r["val_loss"]))["run"]
    assert result["chosen_on"].startswith("validation macro mAP")
    best = json.loads((out / "runs" / result["best"] / "metrics.json").read_text())
    assert "test_map" not in best  # the test split is held back from every run, scored once for the chosen one
    tested = api.evaluate(out / "runs" / result["best"] / "model", data, split="test")
    assert result["best_test_map"] == pytest.approx(tested["map_macro"], abs=1e-6) and result["best_test"]["n"] > 0
    page = (out / "report.html").read_text()
    assert "Test macro mAP of the chosen run" in page and "val macro mAP (95% interval)" in page
    assert "| val macro mAP | sample F1 |" in (out / "results.md").read_text()
    assert decode_png(out / "figures" / "accuracy.png").std() > 5


def test_the_report_page_renders_in_chromium_with_its_verdict_on_the_first_screen(run, browser, tmp_path):  # noqa: F811
    from tests.evaluation.test_report import check_page

    seen = check_page(browser, run.run_dir / "report.html", tmp_path / "shots")
    alts = {alt for alt, *_ in seen[1280]["images"]}
    from smallvision.evaluation.multilabel_report import FIGURES

    assert set(FIGURES.values()) <= alts


def test_auto_measures_both_losses_and_fine_tunes_with_the_kept_one(data, tmp_path):
    run = api.train(data, time_budget=40, image_size=64, out=tmp_path / "auto", progress=False, report=False)
    m = run.metrics
    assert m["task"] == "multi_label" and m["recipe"] == "auto" and m["selection"]["by"]["loss"] == 1
    kept = next(d["text"] for d in m["decisions"] if "head on cached features: kept" in d["text"])
    assert " bce: " in kept and " asl: " in kept  # every head rate with each loss, scored
    # 90 images carve a small validation split: each head's rate and loss are chosen on folds stratified across labels
    loss = re.search(r"kept lr \S+ (bce|asl) by 5-fold cross-validation on the \d+ train\+val images", kept).group(1)
    resolved = (run.run_dir / "config.yaml").read_text()
    assert f"loss: {loss}" in resolved
    assert m["val_map"] == m["val"]["map_macro"] > 0.7


def test_a_killed_multi_label_run_resumes_to_the_same_model(data, tmp_path):
    from safetensors.torch import load_file

    from tests.test_interruptions import kill_when, start_cli

    def scratch(out: Path) -> list[str]:
        args = ["--recipe", "scratch", "--image-size", "32", "--epochs", "30", "--precision", "32-true", "-q"]
        return ["train", str(data), *args, "--out", str(out)]

    reference = cli(*scratch(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    kill_when(start_cli(scratch(out)), (out / "checkpoints" / "scratch" / "last.ckpt").exists, 0.3)
    assert not (out / "metrics.json").exists()
    done = cli("train", "--resume", out, "-q")
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in history_rows(out)] == [str(e) for e in range(1, 31)]
    ours, ref = (
        load_file(str(out / "model" / "model.safetensors")),
        load_file(str(tmp_path / "ref/model/model.safetensors")),
    )
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    m, r = (json.loads((p / "metrics.json").read_text()) for p in (out, tmp_path / "ref"))
    assert m["task"] == "multi_label" and m["val"]["map_macro"] == r["val"]["map_macro"]
    assert read_card(out / "model").thresholds == read_card(tmp_path / "ref" / "model").thresholds
