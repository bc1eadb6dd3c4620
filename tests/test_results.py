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
    older.write_text(json.dumps({"val_accuracy": 0.5, "notes": ["stage features: best epoch 2"]}))
    assert decisions(read_summary(older)) == [] and "kept_stage" not in read_summary(older)


def test_a_schema_1_record_reads_with_the_decisions_and_kept_stage_its_notes_told(tmp_path):
    """Runs before schema 2 told these only in notes: reading one upgrades it, so no reader parses notes."""
    notes = [
        "auto: plan recorded in /x/checkpoints/auto_plan.json: ...",
        "stage features: best epoch 3",
        "auto: chose lite0 features among the candidates on validation (lite0 features 0.9)",
        "auto: final model: lite0 features, val accuracy 0.9000",
    ]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"recipe": "auto", "notes": notes}))
    m = read_summary(path)
    assert m["schema"] == SCHEMA_VERSION and "kept_stage" not in m
    assert [(d.kind, d.text) for d in decisions(m)] == [
        ("plan-file", "plan recorded in /x/checkpoints/auto_plan.json: ..."),
        ("note", "chose lite0 features among the candidates on validation (lite0 features 0.9)"),
        ("final", "final model: lite0 features, val accuracy 0.9000"),
    ]
    path.write_text(json.dumps({"recipe": "finetune", "notes": ["finetune: kept the stage-1 (features) model: ..."]}))
    assert read_summary(path)["kept_stage"] == "features"
