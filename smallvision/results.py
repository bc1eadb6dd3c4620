"""The record a finished run leaves (metrics.json) as a typed, versioned contract: what it holds, the decisions the
run made on its own and which stage's weights it kept, read by the report, the notebook and compare instead of note
text. Plain data beside config in the layers (it imports only errors, and only to refuse a newer file)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

# 1: runs before the record had a version (no `decisions`, no `kept_stage`); 2: both recorded.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Decision:
    """One choice a run made on its own, in a sentence (auto's plan, each choice it made on validation)."""

    kind: str  # plan, plan-file, unapplied, head-lr, round, stop, choice, average, tta, final
    text: str


class RunNotes(list):
    """A run's notes (run.log, the report's notes section) with its decisions beside them: `decide` records both,
    so the report reads the decisions, never the notes' wording."""

    def __init__(self, prefix: str, notes: list[str] = ()) -> None:
        super().__init__(notes)
        self.prefix = prefix
        self.decisions: list[Decision] = []

    def decide(self, kind: str, text: str) -> None:
        """Record a decision of `kind` and note it ('auto: <text>')."""
        self.decisions.append(Decision(kind, text))
        self.append(f"{self.prefix}: {text}")


class SplitMetrics(TypedDict, total=False):
    """One split's metrics (evaluation/metrics.py): accuracy, loss, n, interval, F1s, per class, confusion."""

    accuracy: float
    loss: float
    n: int
    f1_macro: float


# Each task's headline metric in a split's metrics, and its short name in metrics.json's val_<name>/test_<name>.
HEADLINE_METRIC = {"single": "accuracy", "multi": "map_macro"}
SHORT = {"accuracy": "accuracy", "map_macro": "map"}


class RunSummary(TypedDict, total=False):
    """metrics.json: what a finished run records (api.train writes it; every reader goes through read_summary)."""

    schema: int
    task: str  # single_label or multi_label (a record without it is single-label)
    val_accuracy: float
    val_loss: float
    test_accuracy: float
    val_map: float  # multi-label: macro mAP, in place of the accuracies
    test_map: float
    classes: list[str]
    recipe: str
    backbone: str
    weights: str
    device: str
    world_size: int
    best_epoch: int
    kept_stage: str  # the history stage whose best epoch the weights are, when not the last
    decisions: list[dict[str, str]]  # Decision, as JSON
    selection: dict[str, Any]  # what the validation number was chosen among: {"split", "choices", "by"}
    data: dict[str, Any]
    notes: list[str]
    feature_cache: dict[str, int]
    data_check: dict[str, Any]
    tta: str | bool
    candidates: list[dict[str, Any]]
    machine: dict[str, Any]
    tracker: dict[str, Any]
    seconds: float
    val: SplitMetrics
    test: SplitMetrics
    figure_errors: dict[str, str]


def score_of(values: dict[str, Any]) -> tuple[str, str, str, str]:
    """The headline score's key and name in a run's values (metrics.json, a compare row, a history row), and the
    number shown beside it: accuracy and macro F1, or (multi-label) macro mAP and sample F1."""
    if "val_map" in values:
        return "val_map", "macro mAP", "val_f1_samples", "sample F1"
    return "val_accuracy", "accuracy", "val_f1_macro", "macro F1"


def decisions_json(decisions: list[Decision]) -> list[dict[str, str]]:
    """Decisions as metrics.json holds them."""
    return [asdict(d) for d in decisions]


def decisions(summary: RunSummary) -> list[Decision]:
    """The decisions a run recorded (none for runs before schema 2)."""
    return [Decision(**d) for d in summary.get("decisions", [])]


def read_summary(path: str | Path) -> RunSummary:
    """A run's metrics.json at this schema (an older record upgraded), refused when a newer smallvision wrote it
    (its fields may mean other things)."""
    summary: RunSummary = json.loads(Path(path).read_text())
    version = summary.get("schema", 1)
    if version > SCHEMA_VERSION:
        from smallvision.errors import SmallvisionError

        raise SmallvisionError(
            f"{path}: written by a newer smallvision (metrics schema {version}; this one reads up to "
            f"{SCHEMA_VERSION}); upgrade smallvision to read it"
        )
    return _from_schema_1(summary) if version == 1 else summary


# Schema 1 told its decisions only in notes: these are the words it used, read here once so that no reader parses
# notes. (1: "auto: ..." notes; a fine-tuning recipe that kept its head on features said so in a note.)
_V1_KEPT_FIRST = ("kept the stage-1", "kept the features model")
_V1_KINDS = {"plan recorded in": "plan-file", "reused the plan recorded in": "plan-file", "final model:": "final"}


def _from_schema_1(summary: RunSummary) -> RunSummary:
    """A schema-1 record with the decisions and kept stage its notes told, as schema 2 records them."""
    notes = summary.get("notes", [])
    texts = [n.removeprefix("auto: ") for n in notes if n.startswith("auto: ")]
    kinds = [next((k for prefix, k in _V1_KINDS.items() if t.startswith(prefix)), "note") for t in texts]
    upgraded: RunSummary = {**summary, "schema": SCHEMA_VERSION}
    upgraded["decisions"] = [{"kind": k, "text": t} for k, t in zip(kinds, texts, strict=True)]
    if any(words in n for n in notes for words in _V1_KEPT_FIRST):
        upgraded["kept_stage"] = "features"  # schema 1's fine-tuning recipes named their first stage so
    return upgraded
