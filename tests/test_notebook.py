"""Results render in Jupyter (`_repr_html_`), and examples/quickstart.ipynb runs end to end in a real kernel."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

import smallvision

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def _kernel(tmp: Path) -> str:
    """A kernelspec running this interpreter (the venv's python) with ipykernel, visible only to this test."""
    pytest.importorskip("ipykernel", reason="the test extra is absent: pip install -e '.[test]'")
    spec = tmp / "jupyter" / "kernels" / "smallvision-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "smallvision", "language": "python"}))
    return "smallvision-test"


@pytest.fixture(scope="module")
def run(shapes_data, tmp_path_factory) -> smallvision.TrainResult:
    """One features run with its report and figures."""
    out = tmp_path_factory.mktemp("html") / "run"
    return smallvision.train(shapes_data, recipe="features", image_size=32, epochs=3, out=out, progress=False)


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _links(page: str) -> list[str]:
    return re.findall(r'<a href="([^"]+)"', page)


def test_train_result_renders_the_verdict_the_confusion_figure_and_a_link(run, monkeypatch):
    monkeypatch.chdir(run.run_dir.parent)  # Jupyter serves files relative to the notebook's folder
    page = run._repr_html_()
    m = run.metrics
    assert f"{m['test_accuracy']:.1%} test accuracy" in page and f"n={m['test']['n']} images" in page
    assert f"macro F1 {m['test']['f1_macro']:.3f}" in page and f"validation accuracy {m['val_accuracy']:.1%}" in page
    assert "recipe <b>features</b>" in page and "backbone <b>efficientnet_lite0</b>" in page
    assert f"{m['seconds']:.1f} s" in page
    assert _images(page) == [(run.run_dir / "figures" / "confusion.png").read_bytes()]
    assert "<p>Confusion matrix (test)</p>" in page  # the figure is drawn on the headline split, test here
    assert "run/report.html" in _links(page) and (run.run_dir / "report.html").is_file()


def test_without_its_figure_the_confusion_matrix_is_a_table(run, tmp_path):
    bare = smallvision.TrainResult(tmp_path, run.model_dir, run.metrics)  # a run folder with no figures/ nor report
    page = bare._repr_html_()
    assert not _images(page) and "report.html" not in page
    cells = [int(v) for v in re.findall(r"<td>(?:<b>)?(\d+)(?:</b>)?</td>", page)]
    assert cells == [v for row in run.metrics["test"]["confusion_matrix"] for v in row]


def test_evaluate_result_is_still_a_dict_and_renders(run, shapes_data):
    result = smallvision.evaluate(run.model_dir, shapes_data)
    assert isinstance(result, dict) and json.loads(json.dumps(result)) == dict(result)
    assert result["split"] == "test" and result["accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    page = result._repr_html_()
    assert f"{result['accuracy']:.1%} test accuracy" in page and "split <b>test</b>" in page
    cells = [int(v) for v in re.findall(r"<td>(?:<b>)?(\d+)(?:</b>)?</td>", page)]
    assert cells == [v for row in result["confusion_matrix"] for v in row]
    assert any(link.endswith("report.html") for link in _links(page))


def test_compare_result_is_still_a_dict_and_renders(shapes_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = smallvision.compare(shapes_data, recipes="features", out="cmp", image_size=32, epochs=2, progress=False)
    assert isinstance(result, dict) and result["best"] == "features"
    page = result._repr_html_()
    assert f"{result['best_test_accuracy']:.1%} test (features) accuracy" in page
    assert f"{result['rows'][0]['val_accuracy']:.4f}" in page
    assert _images(page) == [(tmp_path / "cmp" / "runs" / "features" / "figures" / "confusion.png").read_bytes()]
    assert {"cmp/report.html", "cmp/runs/features/report.html"} <= set(_links(page))


def test_quickstart_notebook_runs_end_to_end(run, shapes_data, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="the test extra is absent: pip install -e '.[test]'")
    import nbformat

    name = _kernel(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
    monkeypatch.setenv("SMALLVISION_EXAMPLE_DATA", str(shapes_data))
    monkeypatch.setenv("SMALLVISION_EXAMPLE_IMAGE_SIZE", "32")  # features cached by `run`
    monkeypatch.setenv("SMALLVISION_EXAMPLE_EPOCHS", "3")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    nbclient.NotebookClient(nb, kernel_name=name, timeout=300, resources={"metadata": {"path": str(work)}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    run_dir = next((work / "runs").glob("shapes*-features*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.1%} test accuracy" in html[0] and "report.html" in html[0]
    assert "data:image/png;base64," in html[0]
    assert f"{metrics['test_accuracy']:.1%} test accuracy" in html[1]  # evaluate scored the same test split
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "progress bars should be notebook widgets in Jupyter"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    top = re.search(r"ONNX top-1: (\w+) \| PyTorch top-1: (\w+)", text)
    assert top and top[1] == top[2] and top[1] in metrics["classes"]
    assert (run_dir / "model" / "model.onnx").is_file()


def test_lightning_stages_show_one_tqdm_bar_named_after_the_stage(shapes_data, tmp_path, capsys):
    """Lightning's stages show the same tqdm bar as the rest (not Rich), named `<stage> epoch N/M`, with no
    validation bar of its own (in a notebook each would stay behind as an output per epoch)."""
    smallvision.train(shapes_data, recipe="scratch", image_size=32, epochs=2, out=tmp_path / "run", report=False)
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "scratch epoch 1/2" in shown and "scratch epoch 2/2" in shown
    assert "Validation" not in shown and "━" not in shown  # no validation bar; no Rich bar (its bar glyph)


def test_a_run_without_test_metrics_but_a_test_split_says_it_was_held_back(run, tmp_path):
    """A run trained by compare: data.counts has a test split, metrics has none (compare tests only its chosen run)."""
    from smallvision.evaluation.report import HELD_BACK

    metrics = {k: v for k, v in run.metrics.items() if k != "test"}
    page = smallvision.TrainResult(tmp_path, run.model_dir, metrics)._repr_html_()
    assert HELD_BACK in page and "no test split:" not in page
