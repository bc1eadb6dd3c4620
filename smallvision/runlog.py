"""A run's log file: its log lines and Python's warnings, kept in RUN_DIR/run.log instead of on the terminal.

Libraries warn about their own deprecations and tracing (torch.jit, Lightning); those are for whoever maintains the
code, not for the person training. While a RunLog is open, every record that reaches the root logger is written to
the run's log, and so is every Python warning, which goes nowhere else: not through the loggers, so no terminal or
notebook handler shows it, whatever their levels. Records from before the run folder exists (it is created only
once the data checks pass) are kept and written when it is attached; if it never is, the warnings are shown as
Python would have shown them. Through the Python API (no logging set up) smallvision's INFO lines still reach the
file and its own warnings stderr; an inner RunLog (a compare's run) keeps its records from the outer one; and a
warning shown in an earlier run is recorded again in the next run's log.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from types import TracebackType

WARNINGS_LOGGER = "py.warnings"  # the name logging.captureWarnings gives such records
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PACKAGE = "smallvision"  # its INFO stage lines go to run.log, its warnings also to the user
_OPEN: list[RunLog] = []  # the RunLogs open now, innermost last: only the innermost writes (compare's runs)


def _ours(record: logging.LogRecord) -> bool:
    """Whether a record comes from smallvision itself."""
    return record.name == PACKAGE or record.name.startswith(PACKAGE + ".")


def _level_before(name: str, package_level: int) -> int:
    """The level that gated logger `name` before a RunLog set the package's: its own or a parent's below the package,
    else the package's; the user's handlers see only what they saw without a RunLog."""
    logger = logging.getLogger(name)
    while logger.name != PACKAGE and logger.parent is not None:
        if logger.level:
            return logger.level
        logger = logger.parent
    return package_level


class RunLog(logging.Handler):
    """Open with `with RunLog() as run_log:`; `run_log.attach(path)` starts the file (buffered records first)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self._buffer: list[logging.LogRecord] = []
        self._pending: list[tuple] = []  # warnings not yet in a file, to show if none is ever attached
        self._file: logging.FileHandler | None = None
        self._shown = warnings.showwarning
        self._catch = warnings.catch_warnings()
        self._level: int | None = None  # the smallvision logger's own level before, when this RunLog changed it
        self._quieted: list[tuple[logging.Handler, logging.Filter]] = []
        self._terminal: logging.Handler | None = None

    def __enter__(self) -> RunLog:
        self._catch.__enter__()
        # A warning shown once before in this process (an earlier run) is shown again: a filter change resets the
        # registries that remember it; appended, it overrides none of the user's filters.
        warnings.filterwarnings("default", append=True)
        self._shown = warnings.showwarning
        warnings.showwarning = self._record_warning
        if not _OPEN:
            self._open_outermost()
        _OPEN.append(self)
        logging.getLogger().addHandler(self)
        return self

    def _open_outermost(self) -> None:
        """Without a logging setup (Python API, notebooks): INFO lines reach the file, smallvision's warnings stderr."""
        root, package = logging.getLogger(), logging.getLogger(PACKAGE)
        others = [h for h in root.handlers if not isinstance(h, RunLog)]
        if not others:  # logging.lastResort stops firing once the root has a handler: show smallvision's own warnings
            self._terminal = logging.StreamHandler(sys.stderr)
            self._terminal.setLevel(logging.WARNING)
            self._terminal.setFormatter(logging.Formatter("%(message)s"))
            package.addHandler(self._terminal)
        before = package.getEffectiveLevel()
        if before > logging.INFO:
            self._level = package.level
            package.setLevel(logging.INFO)
            quiet = logging.Filter()
            quiet.filter = lambda r: not (_ours(r) and r.levelno < _level_before(r.name, before))
            for handler in others + package.handlers:
                handler.addFilter(quiet)
                self._quieted.append((handler, quiet))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        logging.getLogger().removeHandler(self)
        _OPEN.remove(self)
        package = logging.getLogger(PACKAGE)
        if self._terminal is not None:
            package.removeHandler(self._terminal)
        for handler, quiet in self._quieted:
            handler.removeFilter(quiet)
        if self._level is not None:
            package.setLevel(self._level)
        warnings.showwarning = self._shown
        self._catch.__exit__(kind, error, tb)
        if self._file is not None:
            self._file.close()
        for args in self._pending:
            self._shown(*args)

    def _record_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self._file is None:
            self._pending.append((message, category, filename, lineno, file, line))
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        self.handle(logging.LogRecord(WARNINGS_LOGGER, logging.WARNING, filename, lineno, text, None, None))

    def attach(self, path: str | Path) -> None:
        """Write the records so far, and every later one, to `path` (appended: a resumed run continues its log)."""
        self.acquire()
        try:
            self._file = logging.FileHandler(path, mode="a", encoding="utf-8")
            self._file.setFormatter(self.formatter)
            for record in self._buffer:
                self._file.emit(record)
            self._buffer.clear()
            self._pending.clear()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record until a file is attached, then write it there; an outer RunLog leaves it to the inner one."""
        if _OPEN and _OPEN[-1] is not self:
            return
        if self._file is None:
            self._buffer.append(record)
        else:
            self._file.emit(record)
