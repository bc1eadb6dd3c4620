"""Helpers for reading run folders in tests."""

from __future__ import annotations

import csv
from pathlib import Path


def history_rows(run_dir: Path) -> list[dict[str, str]]:
    """history.csv rows without the `time` column (when each epoch ended differs between identical runs)."""
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]
