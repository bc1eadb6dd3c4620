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
