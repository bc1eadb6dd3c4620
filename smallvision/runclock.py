"""A run's seconds across its processes: each process that works on a run folder is recorded in
checkpoints/clock.json, so a resumed run's `seconds` and `auto`'s time budget count the whole run, not the last process.

A process that ends (finished, failed or interrupted with Ctrl-C) records its seconds; one that was killed outright
counts until the newest file it left in the run folder (its last checkpoint, log line or stage record).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from smallvision import atomic

log = logging.getLogger(__name__)

CLOCK_FILE = Path("checkpoints") / "clock.json"


def _read(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / CLOCK_FILE
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["processes"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning(
            "warning: %s cannot be read (%s): the run's earlier processes are not counted in its seconds", path, e
        )
        return []


def _file_times(run_dir: Path) -> list[float]:
    """The modification time of every file under `run_dir` but the clock itself."""
    clock = (Path(run_dir) / CLOCK_FILE).resolve()
    return [p.stat().st_mtime for p in Path(run_dir).rglob("*") if p.is_file() and p.resolve() != clock]


def earlier_seconds(run_dir: Path) -> float:
    """Seconds the run's earlier processes took: their recorded seconds, a killed one's up to the newest file it
    wrote (before the next process started)."""
    processes = _read(run_dir)
    times = _file_times(run_dir) if any(p.get("seconds") is None for p in processes) else []
    total = 0.0
    for i, p in enumerate(processes):
        if p.get("seconds") is not None:
            total += p["seconds"]
            continue
        until = processes[i + 1]["started"] if i + 1 < len(processes) else float("inf")
        total += max((t - p["started"] for t in times if p["started"] <= t < until), default=0.0)
    return total


def begin(run_dir: Path, earlier: float, started: float) -> None:
    """Record this process as the run's latest, started at `started` (wall clock, before it wrote anything in the
    run folder, so its files never count as a killed predecessor's), with the seconds its earlier processes took."""
    processes = _read(run_dir) + [{"started": started, "earlier": round(earlier, 3), "seconds": None}]
    path = Path(run_dir) / CLOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps({"processes": processes}, indent=1))


def end(run_dir: Path, seconds: float) -> None:
    """Record the seconds this process (the run's latest) took."""
    processes = _read(run_dir)
    if processes:
        processes[-1]["seconds"] = round(seconds, 3)
        atomic.write_text(Path(run_dir) / CLOCK_FILE, json.dumps({"processes": processes}, indent=1))


def spent_before(run_dir: Path) -> float:
    """The seconds the run's earlier processes took, as this process recorded them when it began (0: the first)."""
    processes = _read(run_dir)
    return float(processes[-1].get("earlier", 0.0)) if processes else 0.0
