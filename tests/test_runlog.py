"""A run's log file takes its log lines and Python's warnings; the terminal keeps neither library warning."""

from __future__ import annotations

import logging
import threading
import warnings

from smallvision.runlog import RunLog


def test_warnings_and_lines_from_before_and_after_attach_reach_the_file(tmp_path):
    log = logging.getLogger("smallvision.test_runlog")
    shown_before = warnings.showwarning
    terminal: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = terminal.append
    log.addHandler(handler)
    logging.getLogger("py.warnings").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as shown, RunLog() as run_log:
            warnings.simplefilter("always")
            log.warning("before the folder exists")
            warnings.warn("deprecated before the folder exists", FutureWarning, stacklevel=1)
            run_log.attach(tmp_path / "run.log")
            worker = threading.Thread(target=lambda: warnings.warn("traced in a thread", UserWarning, stacklevel=1))
            worker.start()
            worker.join()
            log.warning("after")
        assert shown == []  # none reached Python's own display
    finally:
        log.removeHandler(handler)
        logging.getLogger("py.warnings").removeHandler(handler)
    text = (tmp_path / "run.log").read_text()
    for line in ("before the folder exists", "FutureWarning: deprecated before", "UserWarning: traced in a thread"):
        assert line in text, text
    assert (
        text.index("before the folder") < text.index("deprecated before") < text.index("traced") < text.index("after")
    )
    assert [r.getMessage() for r in terminal] == ["before the folder exists", "after"]  # no handler saw a warning
    assert warnings.showwarning is shown_before and run_log not in logging.getLogger().handlers
    with RunLog() as again:  # a second run in the same process (compare) records its own warnings
        again.attach(tmp_path / "second.log")
        warnings.warn("second run", FutureWarning, stacklevel=1)
    assert "second run" in (tmp_path / "second.log").read_text()
    assert "second run" not in (tmp_path / "run.log").read_text()


def test_a_run_that_ends_before_its_folder_exists_shows_its_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with RunLog():
            warnings.warn("nowhere to write this", FutureWarning, stacklevel=1)
        assert [str(w.message) for w in shown] == ["nowhere to write this"]
    assert list(tmp_path.iterdir()) == []


def test_through_the_python_api_run_log_gets_info_lines_and_stderr_gets_smallvisions_warnings(
    tmp_path, capfd, monkeypatch
):
    import shutil

    import smallvision
    from tests.imagegen import make_split_dataset

    data = make_split_dataset(tmp_path / "data", train=12, val=6)
    leaked = next((data / "train" / "circle").iterdir())
    shutil.copy(leaked, data / "val" / "circle" / ("copy-" + leaked.name))  # a leak: _precheck warns about it
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # no logging set up, as in a script or notebook
    package = logging.getLogger("smallvision")
    level = package.level
    out = tmp_path / "run"
    smallvision.train(data, recipe="features", image_size=32, epochs=1, out=out, progress=False, report=False)
    text = (out / "run.log").read_text()
    assert " INFO smallvision" in text and "data check:" in text, text
    assert "appear in more than one split" in text
    err = capfd.readouterr().err
    assert "warning: 1 file(s) appear in more than one split" in err, err
    assert package.level == level and package.handlers == [] and logging.getLogger().handlers == []


def test_an_inner_run_log_keeps_its_records_from_the_outer_one(tmp_path):
    log = logging.getLogger("smallvision.test_runlog")
    with RunLog() as outer:
        outer.attach(tmp_path / "compare.log")
        log.warning("compare starts")
        with RunLog() as inner:
            inner.attach(tmp_path / "run.log")
            log.warning("inside the run")
            warnings.warn("warned inside the run", UserWarning, stacklevel=1)
        log.warning("compare ends")
    compare, run = (tmp_path / "compare.log").read_text(), (tmp_path / "run.log").read_text()
    assert "compare starts" in compare and "compare ends" in compare
    assert "inside the run" not in compare and "warned inside" not in compare, compare
    assert "inside the run" in run and "warned inside the run" in run and "compare" not in run


def test_the_same_warning_in_two_runs_reaches_both_logs(tmp_path):
    def warn() -> None:
        warnings.warn("the same deprecation", FutureWarning, stacklevel=1)  # one location: shown once by default

    for name in ("first.log", "second.log"):
        with RunLog() as run_log:
            run_log.attach(tmp_path / name)
            warn()
    assert "the same deprecation" in (tmp_path / "first.log").read_text()
    assert "the same deprecation" in (tmp_path / "second.log").read_text()
