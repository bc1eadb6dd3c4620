"""A run's log file: its log lines and Python's warnings, kept in RUN_DIR/run.log instead of on the terminal.

Libraries warn about their own deprecations and tracing (torch.jit, Lightning); those are for whoever maintains the
code, not for the person training. While a RunLog is open, every record that reaches the root logger is written to
the run's log, and so is every Python warning, which goes nowhere else: not through the loggers, so no terminal or
notebook handler shows it, whatever their levels. Records from before the run folder exists (it is created only
once the data checks pass) are kept and written when it is attached; if it never is, the warnings are shown as
Python would have shown them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import TracebackType

WARNINGS_LOGGER = "py.warnings"  # the name logging.captureWarnings gives such records
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLog(logging.Handler):
    """Open with `with RunLog() as run_log:`; `run_log.attach(path)` starts the file (buffered records first)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))
        self._buffer: list[logging.LogRecord] = []
        self._pending: list[tuple] = []  # warnings not yet in a file, to show if none is ever attached
        self._file: logging.FileHandler | None = None
        self._shown = warnings.showwarning

    def __enter__(self) -> RunLog:
        self._shown = warnings.showwarning
        warnings.showwarning = self._record_warning
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        logging.getLogger().removeHandler(self)
        warnings.showwarning = self._shown
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
        """Keep the record until a file is attached, then write it there."""
        if self._file is None:
            self._buffer.append(record)
        else:
            self._file.emit(record)
