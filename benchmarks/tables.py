"""The one way benchmarks report: an aligned text table on stdout and the same rows as JSON on disk."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def emit(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    """Print `rows` as a table (columns as wide as their longest cell) and write them to `path` as JSON."""
    cols = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c))) for r in rows)) for c in cols}
    print(" | ".join(f"{c:>{widths[c]}}" for c in cols))
    for row in rows:
        print(" | ".join(f"{row.get(c)!s:>{widths[c]}}" for c in cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {path}")
