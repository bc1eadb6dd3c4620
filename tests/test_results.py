"""metrics.json is a versioned record: a run writes its schema, its decisions and what it kept; a newer file is
refused by name instead of misread."""

from __future__ import annotations

import json

import pytest

from smallvision.errors import SmallvisionError
from smallvision.results import SCHEMA_VERSION, Decision, RunNotes, decisions, read_summary


def test_run_notes_record_each_decision_beside_its_note():
    notes = RunNotes("auto", ["stage features: best epoch 3"])
    notes.decide("choice", "chose lite0")
    assert notes == ["stage features: best epoch 3", "auto: chose lite0"]
    assert notes.decisions == [Decision("choice", "chose lite0")]


def test_a_newer_record_is_refused_and_an_older_one_reads_with_no_decisions(tmp_path):
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema": SCHEMA_VERSION + 1, "val_accuracy": 0.5}))
    with pytest.raises(SmallvisionError, match="newer smallvision"):
        read_summary(newer)
    older = tmp_path / "older.json"
    older.write_text(json.dumps({"val_accuracy": 0.5, "notes": ["auto: chose x"]}))
    assert decisions(read_summary(older)) == []
