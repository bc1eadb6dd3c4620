"""The command-line contract: exit codes, outputs, predict on files and folders."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import smallvision
from smallvision.models.folder import load_model, save_model
from tests import forked_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return forked_cli.run(list(args), cwd=cwd)


@pytest.fixture(scope="module")
def trained(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    done = cli("train", shapes_data, "--recipe", "features", "--image-size", "64", "--epochs", "20", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "val accuracy" in done.stdout and str(out / "model") in done.stdout
    return out


# A real `smallvision train` in which library code warns, the way torch.jit and Lightning do: before the run folder
# exists (the data check), in the main thread and in a background thread (the backbone build) during training.
WARNING_RUN = """
import sys, threading, warnings
import smallvision.audit as audit
import smallvision.engine.loop as loop
from smallvision.cli import main

def check_index(*args, **kwargs):
    warnings.warn("check_index is deprecated", FutureWarning)
    return audit_check_index(*args, **kwargs)

def fit_tensors(*args, **kwargs):
    build = threading.Thread(target=lambda: warnings.warn("torch.jit.freeze is deprecated", FutureWarning))
    build.start()
    build.join()
    warnings.warn("converting a tensor to a Python boolean might cause the trace to be incorrect", UserWarning)
    return loop_fit_tensors(*args, **kwargs)

audit_check_index, audit.check_index = audit.check_index, check_index
loop_fit_tensors, loop.fit_tensors = loop.fit_tensors, fit_tensors
sys.argv = ["smallvision", *sys.argv[1:]]
main()
"""


def test_train_terminal_stays_clean_and_the_warnings_go_to_run_log(shapes_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", shapes_data, "--recipe", "features", "--image-size", "64", "--epochs", "3", "--out", out]
    done = subprocess.run(
        [sys.executable, "-c", WARNING_RUN, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    assert not [line for line in terminal.splitlines() if "warn" in line.lower()], terminal
    assert "data check:" in done.stderr and "val accuracy" in done.stdout  # the stage lines and the summary stay
    log = (out / "run.log").read_text()
    for line in (
        "FutureWarning: check_index is deprecated",
        "FutureWarning: torch.jit.freeze is deprecated",
        "UserWarning: converting a tensor to a Python boolean",
        "INFO smallvision: data check:",
    ):
        assert line in log, log


def test_help_lists_commands():
    done = cli("--help")
    assert done.returncode == 0 and "train" in done.stdout and "predict" in done.stdout


def test_train_writes_the_contracted_files(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("val_accuracy", "val_loss", "classes", "recipe", "backbone", "seconds", "test_accuracy"):
        assert key in metrics, key
    assert "INFO smallvision: data check:" in (trained / "run.log").read_text()  # the run's log, beside its results
    assert metrics["recipe"] == "features" and metrics["classes"] == ["circle", "square", "triangle"]


def test_finished_run_is_not_overwritten(trained, shapes_data):
    done = cli("train", shapes_data, "--out", trained)
    assert done.returncode == 1 and "already holds a finished run" in done.stderr


def test_predict_file_and_folder_json(trained, shapes_data):
    one = next((shapes_data / "test" / "square").iterdir())
    done = cli("predict", trained / "model", one, shapes_data / "test", "--top-k", "2", "--json", "-")
    assert done.returncode == 0, done.stderr
    preds = json.loads(done.stdout)
    assert len(preds) == 1 + 18 and all(len(p["top"]) == 2 for p in preds)
    assert preds[0]["path"] == str(one)
    correct = sum(Path(p["path"]).parent.name == p["top"][0]["class"] for p in preds[1:])
    assert correct >= 12
    text = cli("predict", trained / "model", one)
    assert text.returncode == 0 and str(one) in text.stdout


def test_saved_model_round_trip_gives_identical_predictions(trained, shapes_data, tmp_path):
    model, card = smallvision.load(trained / "model")
    save_model(model, card, tmp_path / "again")
    again, _ = load_model(tmp_path / "again")
    x = torch.rand(4, 3, card.image_size, card.image_size)
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))
    preds = smallvision.predict(trained / "model", shapes_data / "val", top_k=1)
    acc = sum(Path(p.path).parent.name == p.top[0][0] for p in preds) / len(preds)
    recorded = json.loads((trained / "metrics.json").read_text())["val_accuracy"]
    assert abs(acc - recorded) < 1e-9


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "/no/such/folder"], 1, "no such file or folder"),
        (["train"], 1, "no data folder given"),
        (["train", ".", "--epochs", "0"], 1, "recipe.epochs"),
        (["train", ".", "--no-such-flag"], 2, "No such option"),
        (["predict", "/tmp"], 1, "usage"),
        (["predict", "/tmp", "/tmp"], 1, "not a model folder"),
    ],
)
def test_exit_codes_and_messages(args, code, message):
    done = cli(*args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr


def test_bad_config_key_is_named(tmp_path, shapes_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  path: {shapes_data}\nmodel:\n  dropuot: 0.5\n")
    done = cli("train", "--config", cfg)
    assert done.returncode == 1 and "unknown key 'model.dropuot'" in done.stderr


def test_imagenet_predict_cli(tmp_path):
    from PIL import Image
    from skimage import data as skdata

    Image.fromarray(skdata.coffee()).save(tmp_path / "coffee.jpg")
    done = cli("predict", "--imagenet", tmp_path / "coffee.jpg")
    assert done.returncode == 0, done.stderr
    assert "espresso" in done.stdout or "cup" in done.stdout


def test_imagenet_predict_applies_tta(tmp_path):
    from PIL import Image
    from skimage import data as skdata

    Image.fromarray(skdata.coffee()).save(tmp_path / "coffee.jpg")
    done = cli("predict", "--imagenet", "--tta", "--json", "-", "--top-k", "3", tmp_path / "coffee.jpg")
    assert done.returncode == 0, done.stderr
    shown = [(t["class"], t["probability"]) for t in json.loads(done.stdout)[0]["top"]]
    tta = smallvision.predict_imagenet(tmp_path / "coffee.jpg", top_k=3, tta=True)[0].top
    plain = smallvision.predict_imagenet(tmp_path / "coffee.jpg", top_k=3)[0].top
    assert shown == [(c, round(p, 6)) for c, p in tta]
    assert [round(p, 6) for _, p in tta] != [round(p, 6) for _, p in plain]  # the flipped and cropped views count


def test_inspect_command_computes_shapes_at_the_asked_image_size(trained):
    own = cli("inspect", trained / "model")
    big = cli("inspect", trained / "model", "--image-size", "128")
    assert own.returncode == 0 and big.returncode == 0, big.stderr
    assert re.search(r"stem +32x32x32", own.stdout) and "output shapes for 64x64 inputs" in own.stdout
    assert re.search(r"stem +32x64x64", big.stdout) and "output shapes for 128x128 inputs (as asked)" in big.stdout


def test_evaluate_and_inspect_commands(trained, shapes_data):
    done = cli("evaluate", trained / "model", shapes_data, "--json")
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)
    assert m["split"] == "test" and m["n"] == 18 and len(m["confusion_matrix"]) == 3
    text = cli("evaluate", trained / "model", shapes_data / "val", "--tta")
    assert text.returncode == 0 and "tta=on" in text.stdout and "macro F1" in text.stdout
    shown = cli("inspect", trained / "model")
    assert shown.returncode == 0 and "head" in shown.stdout and "frozen" in shown.stdout


def test_compare_command_prints_the_table(shapes_data, tmp_path):
    done = cli(
        "compare",
        shapes_data,
        "--recipes",
        "features",
        "--sweep",
        "lr=1e-3,3e-3",
        "--image-size",
        "64",
        "--epochs",
        "3",
        "--out",
        tmp_path / "cmp",
    )
    assert done.returncode == 0, done.stderr
    assert "| features_lr=0.001 |" in done.stdout and "best on validation" in done.stdout
    progress = re.findall(r"^run (\d)/2: (.*) — (.*)$", done.stderr, re.M)
    assert [p[:2] for p in progress] == [("1", "features lr=0.001"), ("2", "features lr=0.003")], done.stderr
    assert progress[0][2] == "time left known after the first run"
    first = json.loads((tmp_path / "cmp" / "runs" / "features_lr=0.001" / "metrics.json").read_text())["seconds"]
    assert progress[1][2] == f"about {max(first, 1):.0f} s left"  # the one run left, at the finished run's seconds
    assert "INFO smallvision.comparison: run 2/2: features lr=0.003" in (tmp_path / "cmp" / "compare.log").read_text()
    (tmp_path / "cmp" / "report.html").unlink()
    rebuilt = cli("report", tmp_path / "cmp")
    assert rebuilt.returncode == 0, rebuilt.stderr
    page = (tmp_path / "cmp" / "report.html").read_text()
    best = json.loads((tmp_path / "cmp" / "results.json").read_text())["best"]
    assert best in page and 'href="runs/features_lr=0.003/report.html"' in page
    bad = cli("compare", shapes_data, "--sweep", "lr", "--out", tmp_path / "bad")
    assert bad.returncode == 1 and "option=value1,value2" in bad.stderr


def _shows_accuracy(page: str, accuracy: float) -> bool:
    return f"{accuracy:.4f}" in page or f"{100 * accuracy:.1f}%" in page


def test_report_command_rebuilds_a_run_s_page(trained, tmp_path):
    page = trained / "report.html"
    before = page.read_text()
    page.unlink()
    done = cli("report", trained)
    assert done.returncode == 0, done.stderr
    rebuilt = page.read_text()
    accuracy = json.loads((trained / "metrics.json").read_text())["val_accuracy"]
    assert _shows_accuracy(rebuilt, accuracy) and str(page) in done.stdout
    assert rebuilt.count("data:image/png;base64,") == before.count("data:image/png;base64,") > 0  # figures embedded
    assert smallvision.report(trained) == page and page.read_text() == rebuilt  # the API, and the same page again
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    with pytest.raises(smallvision.SmallvisionError, match=r"broken: cannot rebuild the run's report .*JSONDecodeErr"):
        smallvision.report(tmp_path / "broken")
    neither = cli("report", tmp_path)
    assert neither.returncode == 1 and f"{tmp_path}: neither a run folder" in neither.stderr
    (tmp_path / "config.yaml").write_text("data:\n  path: x\n")
    unfinished = cli("report", tmp_path)
    assert unfinished.returncode == 1 and f"smallvision train --resume {tmp_path}" in unfinished.stderr


def test_compare_time_left_uses_each_recipe_s_finished_runs():
    from smallvision.comparison import Plan, time_left

    left = [Plan("a", "features", {}), Plan("b", "finetune", {}), Plan("c", "scratch", {})]
    assert time_left(left, {}) == "time left known after the first run"
    # features at its own mean (10 s), finetune at its own (200 s), scratch (none finished) at the mean of all (70 s)
    assert time_left(left, {"features": [8.0, 12.0], "finetune": [190.0, 210.0]}) == "about 5 min left"
    assert time_left(left[:1], {"features": [8.0, 12.0]}) == "about 10 s left"
    assert time_left(left * 20, {"features": [200.0]}) == "about 3 h 20 min left"
