"""`auto` reads the data, prints and records a plan that fits its budget, follows it on a rerun and a resume, and
keeps only what validation supports."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import smallvision
from smallvision.auto import execute, select
from smallvision.auto import plan as planning
from smallvision.config import build_config
from smallvision.data.index import DatasetIndex, ImageItem
from smallvision.results import SCHEMA_VERSION, decisions

FAST = {"image_size": 64, "epochs": 3, "finetune_epochs": 2, "progress": False, "report": False}


def _plan(run_dir: Path) -> planning.Plan:
    return planning.Plan.from_dict(json.loads((run_dir / "checkpoints" / "auto_plan.json").read_text()))


def _clock_checks(run_dir: Path) -> dict[str, str]:
    """The run's recorded clock checks (auto_round1.json ...), which a resume must read, never decide again."""
    return {
        p.name: p.read_text() for p in (run_dir / "checkpoints").glob("auto_*.json") if p.name != planning.PLAN_FILE
    }


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def mislabelled(shapes_data, tmp_path_factory) -> Path:
    """The shapes with two validation images filed under another class: no model scores 1.0 on validation, so auto's
    fine-tuning rounds run (a candidate already at 1.0 gets none: a round could only lower its loss)."""
    root = tmp_path_factory.mktemp("mislabelled") / "shapes"
    shutil.copytree(shapes_data, root)
    classes = sorted(p.name for p in (root / "val").iterdir())
    for k in range(2):
        image = sorted((root / "val" / classes[k]).iterdir())[0]
        image.rename(root / "val" / classes[k + 1] / f"moved-{image.name}")
    return root


@pytest.fixture(scope="module")
def first(mislabelled, tmp_path_factory, session_cache):
    """One auto run on the shapes that the tests below compare against (in the session's cache, as they run)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
        return smallvision.train(mislabelled, out=tmp_path_factory.mktemp("auto") / "a", **FAST)


def test_the_plan_is_printed_before_the_work_and_recorded(first):
    result = first
    plan = _plan(result.run_dir)
    log = (result.run_dir / "run.log").read_text()  # what the terminal showed, as the CLI logs it
    shown = log[log.index("auto plan (--time-budget") :]
    work = [log.index(w) for w in ("activation cache:", "stage features", "data: ") if w in log]
    assert log.index("auto plan") < min(work)  # before the training that follows it
    # each step that ran is set against its estimate (by the clock), in the plan's file and the notes
    taken = {r["step"]: r for r in plan.actual}
    lead = taken[f"decode + features {plan.backbones[0]}"]
    assert lead["estimate"] == pytest.approx(plan.seconds_of("decode", f"features {plan.backbones[0]}"), abs=0.06)
    assert lead["actual"] > 0 and lead["ratio"] == pytest.approx(lead["actual"] / lead["estimate"], abs=0.02)
    assert {f"round {i}" for i in range(1, len(plan.rounds) + 1)} & set(taken)
    # the budget the richest rung left buys more rounds and the runner-up's own; it is told how much it used
    assert len(plan.rounds) == len(planning.ROUND_SHAPES) and plan.runner_up
    assert "runner-up round 1" in taken and (result.run_dir / "checkpoints" / "finetune1b").is_dir()
    assert plan.tta and taken["tta (val)"]["estimate"] > 0  # flipping val for the choice is costed and clocked too
    assert any("the budget left buys the runner-up backbone's own" in w for w in plan.why)
    assert re.search(r"auto: used \d+ s of --time-budget 600 s \(\d+%\)", "\n".join(result.notes))
    costs = next(n for n in result.notes if n.startswith("auto: the plan against the clock: "))
    shown_lead = f"{lead['estimate']:.0f} s estimated, {lead['actual']:.0f} s taken"
    assert f"decode + features {plan.backbones[0]} {shown_lead}" in costs
    for step in plan.steps:
        assert f"{step.seconds:7.0f} s  {step.step}" in shown and step.seconds >= 0
    assert plan.estimate_seconds == pytest.approx(sum(s.seconds for s in plan.steps if not s.spare))
    assert plan.profile["images"] == 120 and plan.images == {"train": 72, "val": 30, "test": 18}
    assert plan.costs and all(k in plan.costs for k in plan.measured)
    # every candidate the plan named ran, and the notes say what was chosen among them and why
    chose = next(n for n in result.notes if n.startswith("auto: chose "))
    for name in plan.backbones:
        assert f"{name} features" in chose
    # each decision is recorded beside its note, by kind, in the versioned metrics.json the report reads
    m = smallvision.read_metrics(result.run_dir)
    made = decisions(m)
    assert m["schema"] == SCHEMA_VERSION and {"plan-file", "head-lr", "choice", "final"} <= {d.kind for d in made}
    assert [f"auto: {d.text}" for d in made] == [n for n in result.notes if n.startswith("auto: ")]
    card = smallvision.load(result.model_dir)[1]
    assert result.metrics["backbone"] == "+".join(b.name for b in card.backbones)
    assert card.image_size == plan.size or (plan.scratch is not None and card.image_size == plan.scratch.size)


def test_a_first_run_takes_round_1s_activations_from_the_feature_pass(first, mislabelled, session_cache, tmp_path):
    # The machine's figures (`first` timed them) and decoded images as the session has them, no features: a folder's
    # first run, with the split of the feature pass free (whether it pays is test_the_feature_pass_is_split_...).
    from smallvision.auto.costs import Costs
    from smallvision.config import load_config
    from smallvision.engine.precision import resolve_precision

    cache = tmp_path / "cache"
    shutil.copytree(session_cache, cache, ignore=shutil.ignore_patterns("features"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLVISION_CACHE_DIR", str(cache))
        mp.setattr(planning, "tap_seconds", lambda *a: 0.0)  # 120 tiny images save too little to pay for a split
        r = smallvision.train(mislabelled, out=tmp_path / "a", backbone="efficientnet_lite0", time_budget=60, **FAST)
        plan = _plan(r.run_dir)
        cfg = build_config(load_config(r.run_dir / "config.yaml"))
        costs = Costs(resolve_precision(cfg.trainer.precision))
        untapped = planning.rounds_on(
            cfg, dataclasses.replace(plan, tapped=False), costs, plan.backbones[0], plan.rounds
        )
        tapped = planning.rounds_on(cfg, plan, costs, plan.backbones[0], plan.rounds)
        again = smallvision.train(
            mislabelled, out=tmp_path / "b", backbone="efficientnet_lite0", time_budget=60, **FAST
        )
    assert plan.tapped and any("the feature passes keep fine-tuning round 1's" in w for w in plan.why)
    kept = [n for n in r.notes if n.startswith("activation cache:")]
    assert "train, val, test taken as the feature pass computed them, not run again" in kept[0]
    assert not any("ran here" in n for n in kept[1:])  # a later round's cut was never the tap's: no false reason
    assert any("fine-tuning efficientnet_lite0 round 1 (" in n for n in r.notes)
    # round 1 is costed as it ran: its augmented views alone, below what caching every image again costs
    assert 0 < tapped[0].setup < untapped[0].setup
    assert [x.seconds for x in tapped[1:]] == pytest.approx([x.seconds for x in untapped[1:]])
    # the second run finds the features cached: the same plan, round 1 re-costed on every image, and both say why
    assert _plan(again.run_dir).tapped and _plan(again.run_dir).rounds == plan.rounds
    ledger = {
        name: {x["step"]: x["estimate"] / x["remade"] for x in _plan(run.run_dir).actual}  # the plan's figure
        for name, run in (("a", r), ("b", again))
    }
    assert ledger["a"]["round 1"] == pytest.approx(tapped[0].seconds, abs=0.06)
    assert ledger["b"]["round 1"] == pytest.approx(untapped[0].seconds, abs=0.06)
    kept = [n for n in again.notes if n.startswith("activation cache:")]
    assert "every split ran here (their features were already cached)" in kept[0]
    # each step's images and images/s: a cold feature pass runs all 120 images, a warm one none; a round its
    # epochs' 72 training images each, as Lightning counted them (done.json keeps the round's history rows)
    steps = [{x["step"]: x for x in _plan(run.run_dir).actual} for run in (r, again)]
    lead = "decode + features efficientnet_lite0"
    cold, warm = steps[0][lead], steps[1][lead]
    assert cold["images"] == 120 and cold["images_per_second"] > 0
    assert cold["images_per_second"] * cold["actual"] == pytest.approx(120, abs=0.05 * cold["images_per_second"] + 1)
    assert warm["images"] == 0 and warm["images_per_second"] is None
    epochs = json.loads((r.run_dir / "checkpoints" / "finetune1" / "done.json").read_text())["history"]
    assert epochs and [row["images"] for row in epochs] == [72] * len(epochs)
    assert steps[0]["round 1"]["images"] == 72 * len(epochs) and steps[0]["round 1"]["images_per_second"] > 0
    costs = next(n for n in r.notes if n.startswith("auto: the plan against the clock: "))
    assert f"{lead} " in costs and f", {cold['images_per_second']:g} images/s" in costs
    assert any("it kept none: its features were already cached" in n for n in again.notes)


@pytest.mark.parametrize("images", [120, 20_000])
def test_the_feature_pass_is_split_for_round_1_only_where_that_pays(images, monkeypatch):
    cfg = build_config({"data": {"path": "x"}})
    costs = _Costs(COSTS)
    plan = planning.make_plan(cfg, _index(images), _Profile(images, 150), None, costs)
    assert plan.rounds

    def pays(name: str) -> bool:  # round 1's pass skipped against twice the split's builds
        spec = SimpleNamespace(backbone=name)
        full, kept = (planning._views_seconds(cfg, costs, spec, plan.size, plan.images, plan.views, t) for t in (0, 1))
        return full - kept >= 2 * planning.tap_seconds(cfg, costs, name, plan.size)

    assert planning.tap_seconds(cfg, costs, "efficientnet_lite0", 224) == 1.0  # fp32: one arithmetic, its bottom
    assert plan.tapped == all(map(pays, plan.backbones)) == (images == 20_000)
    slowest = min(plan.backbones, key=lambda b: costs.features(SimpleNamespace(backbone=b), plan.size))
    rounds = planning.rounds_on(cfg, plan, costs, slowest, plan.rounds)
    assert plan.rounds[0].seconds == pytest.approx(rounds[0].seconds)  # round 1 costed as the plan says it runs
    if plan.tapped:  # round 1 is cheaper by what it no longer runs, each feature step dearer by the split
        unsplit = planning.rounds_on(cfg, dataclasses.replace(plan, tapped=False), costs, slowest, plan.rounds)
        assert rounds[0].seconds < unsplit[0].seconds
        assert any("the feature passes keep fine-tuning round 1's" in w for w in plan.why)
        monkeypatch.setattr(planning, "tap_seconds", lambda *a: 0.0)
        free = planning.make_plan(cfg, _index(images), _Profile(images, 150), None, _Costs(COSTS))
        assert (free.backbones, free.size) == (plan.backbones, plan.size)
        for name in plan.backbones:
            split = 1.0  # the frozen part's form: the top's replaces the whole network's
            assert plan.seconds_of(f"features {name}") == pytest.approx(free.seconds_of(f"features {name}") + split)


def test_the_split_pass_keeps_only_what_fits_beside_one_candidates_round_1_cache():
    from smallvision.caching.activations import cache_bytes

    cfg, costs, images = build_config({"data": {"path": "x"}}), _Costs(COSTS), 20_000
    plan = planning.make_plan(cfg, _index(images), _Profile(images, 150), None, costs)
    assert plan.tapped
    backbones = list(COSTS)  # three candidates, each keeping its rows until its own round 1
    values = costs.activations(None, plan.size, 1)
    kept = cache_bytes(values, plan.images, 0, "fp32")  # each backbone's unaugmented rows, kept by its pass
    cache = cache_bytes(values, plan.images, planning._augmented_views(cfg, plan.views), "fp32")
    peak = (len(backbones) - 1) * kept + cache  # the best's round 1 runs while the others' rows wait
    args = (backbones, plan.size, plan.views, plan.images)
    for budget, pays in ((peak + 0.5, True), (peak - 0.5, False)):
        tight = build_config({"data": {"path": "x"}, "trainer": {"memory_budget": budget / 1e9}})
        assert len(backbones) * kept <= budget and cache <= budget  # each part alone fits either way
        assert planning.tap_pays(tight, costs, *args) is pays


def test_each_candidates_rounds_and_flips_are_costed_on_its_own_backbone(first):
    from smallvision.auto.costs import Costs
    from smallvision.config import load_config
    from smallvision.engine.precision import resolve_precision
    from smallvision.models.weights import resolve_weights

    plan, run_dir = _plan(first.run_dir), first.run_dir
    cfg = build_config(load_config(run_dir / "config.yaml"))
    taken = {r["step"]: r["estimate"] / r["remade"] for r in plan.actual}  # the plan's figure, before the clock's
    costs = Costs(resolve_precision(cfg.trainer.precision))  # the session's cache: the run timed what these read

    def own_rounds(backbone: str, rounds) -> list:
        return planning.rounds_on(cfg, plan, costs, backbone, rounds)

    def ran_on(who: str) -> str:  # the backbone the notes say ran that round 1 (figures alone can tie on tiny data)
        runs = re.compile(rf"auto: fine-tuning (\S+) {who}round 1 \(")
        names = {m.group(1) for n in first.notes if (m := runs.match(n))}  # its continuations name it again
        assert len(names) == 1, f"no single backbone ran {who}round 1, say the notes: {names}"
        return names.pop()

    best, second = ran_on(""), ran_on("runner-up ")
    assert best != second  # the runner-up is another backbone
    slowest = min(plan.backbones, key=lambda b: costs.features(resolve_weights(b, cfg.model.weights), plan.size))
    assert plan.rounds[0].seconds == pytest.approx(own_rounds(slowest, plan.rounds)[0].seconds)  # the slowest's
    recost = [d.text for d in decisions(smallvision.read_metrics(run_dir)) if d.kind == "recost"]
    ran = ((best, plan.rounds, "round 1", "round1"), (second, plan.runner_up, "runner-up round 1", "round1b"))
    for name, rounds, step, check in ran:
        own = own_rounds(name, rounds)
        # the recorded estimate is its own backbone's figures (as many epochs as the clock check let run), not the
        # slowest one's twice; a re-cost that changes the figure is told
        epochs = json.loads((run_dir / "checkpoints" / f"auto_{check}.json").read_text())["epochs"]
        assert own[0].seconds_for(epochs) == pytest.approx(taken[step], abs=0.06)
        own_s = sum(r.seconds for r in own)
        changed = name != slowest and round(own_s, 1) != round(sum(r.seconds for r in rounds), 1)
        assert changed == any(f"re-costed on {name}, which runs them" in text for text in recost), (name, own_s)
    assert not costs.measured  # every figure these read, the run had timed
    # flipping val is costed for the members the run kept, each on its own backbone: its fp32 form, then val
    final = next(n for n in first.notes if n.startswith("auto: final model: "))
    kept = [
        name.split()[0] for name in final.removeprefix("auto: final model: ").split(", ")[0].split(" averaged with ")
    ]
    share = plan.images["val"] / (plan.images["val"] + plan.images["test"])
    flips = sum(
        planning.flip_seconds(cfg, costs, b, plan.size, plan.images["val"])
        if b in plan.backbones
        else plan.tta_seconds * share  # a from-scratch member: the plan's figure for one member
        for b in kept
    )
    assert taken["tta (val)"] == pytest.approx(flips, abs=0.06 * len(kept))


def test_flips_and_held_out_features_cost_building_the_fp32_form_then_its_images_at_its_rate():
    fp32, bf16 = _Costs(COSTS), _Costs(COSTS)
    bf16.precision = "bf16-mixed"
    cfg, rate = build_config({"data": {"path": "x"}}), 0.8 * COSTS["efficientnet_lite0"]  # the double's fp32 rate
    lite0 = planning.flip_seconds(cfg, fp32, "efficientnet_lite0", 224, 300)
    assert lite0 == pytest.approx(2.0 + 300 / rate)
    joined = planning.flip_seconds(cfg, fp32, "efficientnet_lite0+efficientnet_lite2", 224, 300)
    assert joined == pytest.approx(lite0 + planning.flip_seconds(cfg, fp32, "efficientnet_lite2", 224, 300))
    # val and test features: the fp32 form, and with bf16 training features that form's own too
    n = {"train": 1000, "val": 200, "test": 100}
    budget = SimpleNamespace(cfg=cfg, n=n)
    assert planning._held_out_seconds(budget, fp32, "efficientnet_lite0", 224) == pytest.approx(2.0 + 300 / rate)
    assert planning._held_out_seconds(budget, bf16, "efficientnet_lite0", 224) == pytest.approx(4.0 + 300 / rate)


@pytest.mark.parametrize("task", ["single", "multi"])
def test_heads_are_costed_per_epoch_and_for_each_loss_they_try(task):
    costs, asked = _Costs(COSTS), []

    def head(classes: int, multi: bool, batch: int = 32, loss: str | None = None, dropout=0.0, hidden=0) -> dict:
        asked.append((classes, multi, loss, dropout, hidden))
        dear = 2.0 if loss == "asl" else 1.0  # a loss that costs more is costed as more
        return {"stage_seconds": 0.5 * dear, "epoch_seconds": 0.01 * dear, "sample_epoch_seconds": 1e-5 * dear}

    costs.head = head
    cfg = build_config({"data": {"path": "x"}})
    index = SimpleNamespace(items=_index(1000, 4).items, classes=["a", "b", "c", "d"], task=task)
    b = planning._budget(cfg, index, _Profile(1000, 150), None, costs, 0.0)
    losses = [None] if task == "single" else ["bce", "asl"]
    # each loss's figure, timed with the head's dropout (2.7-3x a bare head's time on these cores) and hidden layer
    assert asked == [(4, task == "multi", loss, cfg.model.dropout, 0) for loss in losses] and cfg.model.dropout == 0.5
    k = planning.FOLDS  # 200 validation images: heads are chosen on k-fold cross-validation of train+val

    def fit(images: float) -> float:  # one head: its fixed part, then each epoch over `images` rows
        return 0.5 + cfg.recipe.epochs * (0.01 + 1e-5 * images)

    one = fit(1000) + k * fit(1000 * (k - 1) / k)  # 800 train + 200 val rows; each fold's head all but its fold
    per_lr = one if task == "single" else one * (1 + 2)
    assert b.folds == k and b.head_seconds == pytest.approx(len(planning.head_lrs(cfg)) * per_lr)


ROUND_NOTE = re.compile(r"auto: fine-tuning \S+ (runner-up |third )?round \d+ \(")  # one note per round run


def test_the_validation_number_says_how_many_choices_auto_made_on_it(first, tmp_path):
    """Every decision auto made on validation is counted once in metrics.json and the model card; the terminal summary
    and the report quote the untouched test split first and that count beside validation's number."""
    from math import comb

    from smallvision.evaluation.report import write_report

    notes, plan = first.notes, _plan(first.run_dir)
    chose = next(n for n in notes if n.startswith("auto: chose "))
    listed = re.search(r"(?:on validation \(|; on validation: )([^;]*)\)$", chose).group(1)  # cross-validated or not
    candidates = listed.split(", ")  # all at one size here, so every pair and trio averaged
    expected = {
        "head_lr": len(plan.backbones),  # two head rates tried per backbone (--lr not set)
        "finetune_round": sum(bool(ROUND_NOTE.match(n)) for n in notes),
        "candidate": 1,
        "average": comb(len(candidates), 2)
        + comb(len(candidates), 3)
        + any(n.startswith("auto: validation cannot tell ") for n in notes),  # the leaders' average, when tied
        "tta": sum(n.startswith("auto: test-time augmentation (") for n in notes),
    }
    expected = {k: v for k, v in expected.items() if v}
    selection = first.metrics["selection"]
    assert selection == {"split": "val", "choices": sum(expected.values()), "by": expected}
    assert json.loads((first.run_dir / "metrics.json").read_text())["selection"] == selection
    card = smallvision.load(first.model_dir)[1].metrics
    assert card["selection"] == selection and card["test_accuracy"] == first.metrics["test_accuracy"]
    said = f"the best of {selection['choices']} choices made on it (head learning rate {expected['head_lr']}, "
    lines = first.summary().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("test accuracy"))
    assert lines[at + 1].startswith("val accuracy") and said in lines[at + 1]
    run_dir = tmp_path / "run"
    shutil.copytree(first.run_dir, run_dir)
    page = write_report(run_dir).read_text()
    verdict = page[page.index('id="verdict-card"') : page.index("</dl>")]
    assert ">Test accuracy<" in verdict and said in verdict


ROUND_VERDICT = re.compile(
    r"auto: fine-tuning (\S+) (?:runner-up |third )?round \d+(?: \(continued\))? \(.*?\): best val accuracy "
    r"(?P<got>[\d.]+)(?: \(loss (?P<got_loss>[\d.]+)\))? at epoch \d+, (?P<verdict>better|not better) than "
    r"(?P<kept>[\d.]+)(?: \(loss (?P<kept_loss>[\d.]+)\))?"
)


def test_each_round_is_judged_against_the_last_one_kept(first):
    """A round's verdict compares it with the candidate's head, then with the last round that improved (a round that
    did not leaves the weights and the standing where they were); on an equal accuracy the lower loss decided."""
    heads = {}
    for n in first.notes:
        kept = (
            r"auto: (\S+) head on cached features: kept (.*?) (?:on validation \(|by \d-fold .*; on validation alone: )"
        )
        if m := re.match(kept + r"(.*)\)$", n):  # the kept head's validation score, whichever way it was chosen
            heads[m.group(1)] = next(float(v.split()[0]) for k, v in _pairs(m.group(3)) if k == m.group(2))
    verdicts = [m for n in first.notes if (m := ROUND_VERDICT.match(n))]
    assert verdicts, "the fixture's run fine-tuned nothing: there is no verdict to check"
    kept: dict[str, tuple] = {}
    for m in verdicts:
        backbone, got, was = m.group(1), float(m.group("got")), float(m.group("kept"))
        last = kept.get(backbone, (heads[backbone], None))  # the head's score, or the last kept round's (and loss)
        assert was == last[0] and (m.group("kept_loss") is None or last[1] in (None, m.group("kept_loss")))
        if m.group("verdict") == "better":
            assert got > was or float(m.group("got_loss")) < float(m.group("kept_loss"))
            kept[backbone] = (got, m.group("got_loss"))
        else:
            assert got <= was


def _pairs(shown: str) -> list[tuple[str, str]]:
    """'lr 0.001: 0.9 (loss 0.3), lr 0.003: 0.9' as [('lr 0.001', '0.9 (loss 0.3)'), ('lr 0.003', '0.9')]."""
    return [tuple(part.split(": ", 1)) for part in re.split(r", (?=lr )", shown)]


def test_the_same_seed_gives_the_same_plan_and_the_same_model(first, mislabelled, tmp_path):
    result = first
    again = smallvision.train(mislabelled, out=tmp_path / "b", **FAST)
    a, b = _plan(result.run_dir), _plan(again.run_dir)
    assert b.measured == []  # the second run read the step costs the first one measured on this machine
    for plan in (a, b):  # what was timed this time, how long the probe and the steps took: records, not decisions
        plan.measured, plan.actual = [], []
        (plan.probe or {}).pop("seconds", None)
    assert a == b
    ours, theirs = _weights(again.model_dir), _weights(result.model_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert again.metrics["val_accuracy"] == result.metrics["val_accuracy"]


def test_a_resumed_run_keeps_its_plan_and_never_times_the_machine_again(first, shapes_data, tmp_path, monkeypatch):
    result = first
    run = tmp_path / "resumed"
    shutil.copytree(result.run_dir, run)
    for name in ("metrics.json", "history.csv"):
        (run / name).unlink()
    shutil.rmtree(run / "model")
    for stage in (run / "checkpoints").glob("finetune*"):
        shutil.rmtree(stage)  # interrupted before fine-tuning finished
    plan = dataclasses.replace(_plan(run), actual=[])  # the plan; what its steps took is a record of each process
    costed = next((run / "checkpoints").glob("auto_costs_round1_*.json"))  # round 1 costed on the backbone it ran
    record = json.loads(costed.read_text())
    record["rounds"][0]["seconds"] *= 10  # a resume costs its rounds from this record, not from the machine now
    costed.write_text(json.dumps(record))
    checks = _clock_checks(run)
    assert {"auto_round1.json", "auto_tta.json"} <= set(checks)

    def slow(self, *args, **kwargs):
        raise AssertionError("a resumed run timed its steps again instead of following its recorded plan")

    from smallvision.auto.costs import Costs

    monkeypatch.setattr(Costs, "features", slow)
    resumed = smallvision.train(resume=run, progress=False, report=False)
    assert any("reused the plan recorded in" in n for n in resumed.notes)
    assert dataclasses.replace(_plan(run), actual=[]) == plan
    assert _clock_checks(run) == checks
    check = json.loads(checks["auto_round1.json"])
    taken = {r["step"]: r["estimate"] for r in _plan(run).actual}  # the estimate the clock re-made and checked
    assert taken["round 1"] == pytest.approx(
        planning.Round(**record["rounds"][0]).seconds_for(check["epochs"]) * check["ratio"], abs=0.06
    )
    ours, theirs = _weights(resumed.model_dir), _weights(result.model_dir)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_budget_far_too_small_is_honoured_and_explained(shapes_data, tmp_path):
    unused = {"momentum": 0.8, "warmup_epochs": 2.0, "memory_budget": 2.0}  # heads only: one-cycle, no cache
    r = smallvision.train(shapes_data, out=tmp_path / "tight", time_budget=1, optimizer="sgd", **unused, **FAST)
    plan = _plan(r.run_dir)
    assert plan.rounds == [] and plan.backbones == ["efficientnet_lite0"] and plan.scratch is None
    assert plan.train_cap is not None and plan.train_cap < 72
    assert any("too small for fine-tuning" in w for w in plan.why)
    assert any("too small for fine-tuning" in n for n in r.notes)
    assert not list((r.run_dir / "checkpoints").glob("finetune*"))
    assert smallvision.load(r.model_dir)[1].trainable == ["head"]
    (after,) = [n for n in r.notes if "no stage that ran uses them" in n]  # not --optimizer: the sgd heads ran
    flags = "--momentum, --warmup-epochs, --finetune-epochs, --memory-budget"  # FAST's --finetune-epochs too
    assert after == f"auto: {flags} set but not applied: no stage that ran uses them"


class _Costs:
    """Fixed step costs (images/s and seconds per batch) standing in for a machine's measured ones."""

    machine = {"cores": 2}
    measured: list[str] = []
    used: list[str] = []
    figures: dict = {}
    precision = "32-true"

    def __init__(self, ips: dict[str, float]) -> None:
        self.ips = ips
        self.batches: set[int] = set()  # the batch sizes the plan asked figures at

    def decode(self) -> dict:
        return {"seconds_per_image": 0.002, "seconds_per_megapixel": 0.01}

    def head(self, classes: int, multi: bool, batch: int = 32, loss: str | None = None, dropout=0.0, hidden=0) -> dict:
        return {"stage_seconds": 0.05, "epoch_seconds": 0.002, "sample_epoch_seconds": 2e-5}

    def features(self, spec, size: int) -> float:
        return self.ips[spec.backbone] * (224 / size) ** 2

    def finetune(self, spec, size: int, blocks: int, batch: int = 32) -> dict:
        self.batches.add(batch)
        ips = self.features(spec, size)
        return {
            "step_seconds": batch / ips,
            "val_batch_seconds": batch / ips / 2,
        }

    def finetune_images(self, spec, size: int, blocks: int, batch: int = 32) -> dict:
        self.batches.add(batch)
        ips = self.features(spec, size)  # every step runs the whole network: several times the cached step
        return {"step_seconds": 4 * batch / ips, "val_batch_seconds": 1.5 * batch / ips}

    def bottom(self, spec, size: int) -> dict:
        return {"bottom_images_per_second": self.features(spec, size) * 1.2, "bottom_build_seconds": 1.0}

    def network_stage(self) -> float:
        return 1.5

    def augment(self, augment, size: int) -> float:
        return 5e-4

    def activations(self, spec, size: int, blocks: int) -> int:
        return 80 * (size // 16) ** 2  # efficientnet_lite's boundary below its top block: 80 channels at 1/16

    def fp32_form(self, spec, size: int) -> dict:
        return {"build_seconds": 2.0, "images_per_second": 0.8 * self.features(spec, size)}

    def scratch(self, name: str, size: int, batch_norm: bool, batch: int = 32) -> dict:
        self.batches.add(batch)
        return {"step_seconds": 0.03 * batch / 32, "val_batch_seconds": 0.01 * batch / 32}


class _Profile:
    def __init__(self, images: int, side: int) -> None:
        self.images, self.width, self.height = images, side, side
        self.short_side = {"p10": side, "p50": side, "p90": side}
        self.grayscale, self.tiny = 0.0, side <= 64

    def to_dict(self) -> dict:
        return {"images": self.images}

    def native_size(self, cap: int) -> int | None:
        from smallvision.data.profile import DataProfile

        return DataProfile.native_size(self, cap)

    def sentence(self) -> str:
        return f"{self.images} images"


def _index(n: int, classes: int = 6) -> DatasetIndex:
    items = [
        ImageItem(Path(f"/x/{i}.jpg"), i % classes, "val" if i % 5 == 0 else "train", f"{i:08x}") for i in range(n)
    ]
    return DatasetIndex(Path("/x"), "folders", [f"c{c}" for c in range(classes)], items)


COSTS = {"efficientnet_lite0": 186.0, "efficientnet_lite1": 105.0, "efficientnet_lite2": 70.0}


@pytest.mark.parametrize("images", [400, 5_000, 20_000, 200_000])
def test_large_folders_scale_the_plan_down_and_it_always_fits(images):
    cfg = build_config({"data": {"path": "x"}})
    plan = planning.make_plan(cfg, _index(images), _Profile(images, 150), None, _Costs(COSTS))
    assert plan.estimate_seconds <= planning.SAFETY * cfg.recipe.time_budget
    if images == 400:
        assert len(plan.backbones) == 3 and len(plan.rounds) == 4 and len(plan.runner_up) == 4 and plan.tta
    if images == 20_000:
        assert "efficientnet_lite1" not in plan.backbones and plan.train_cap is None
    if images == 200_000:
        assert plan.train_cap is not None and plan.train_cap < 0.8 * images
        assert any("too small" in w for w in plan.why)
    smaller = planning.make_plan(cfg, _index(images // 2), _Profile(images // 2, 150), None, _Costs(COSTS))
    assert smaller.rung <= plan.rung  # fewer images never get a poorer rung of the ladder


@pytest.mark.parametrize(
    "images,budget", [(400, 600), (2_500, 600), (5_000, 600), (20_000, 600), (400, 300), (400, 480), (1_000, 450)]
)
def test_what_the_chosen_rung_leaves_buys_more_rounds_then_the_runner_ups_own(images, budget):
    cfg = build_config({"data": {"path": "x"}, "recipe": {"time_budget": budget}})
    plan = planning.make_plan(cfg, _index(images), _Profile(images, 150), None, _Costs(COSTS))
    available = planning.SAFETY * budget - planning.RESERVED
    assert plan.estimate_seconds <= available
    # the ladder's gap to the next rung is spent, down to 85% or to less than the next thing the plan adds: one more
    # epoch of the last round, one epoch of the next round (caching its views first) or, every round of the best
    # planned, the runner-up's first round (whole)
    last, left = plan.rounds[-1], available - plan.estimate_seconds
    if len(plan.rounds) < len(planning.ROUND_SHAPES):
        double, count = _Costs(COSTS), len(plan.rounds) + 1
        slowest = min(plan.backbones, key=lambda b: double.features(SimpleNamespace(backbone=b), plan.size))
        shapes = [planning.Round(cfg.recipe.unfreeze_blocks + k, 1, 1e-3) for k, _ in planning.ROUND_SHAPES[:count]]
        nxt = planning.rounds_on(cfg, plan, double, slowest, shapes)[-1]
        shortened = last.epochs < cfg.recipe.finetune_epochs  # the plan stops at a round it had to shorten
        smallest = last.seconds_for(1) - last.seconds_for(0) if shortened else nxt.seconds
    else:
        smallest = next((s.seconds for s in plan.steps if s.key == "runner-up round 1"), 0.0)
    assert 0.85 * available <= plan.estimate_seconds or left < smallest
    assert plan.estimate_seconds == pytest.approx(sum(s.seconds for s in plan.steps if not s.spare))
    assert plan.rounds  # even 20,000 images get fine-tuning: as many epochs of a round as fit
    keys = [s.key for s in plan.steps]
    rounds = [k for k in keys if k.startswith("round ")]
    assert rounds == [f"round {i}" for i in range(1, len(plan.rounds) + 1)]
    runner_up = [k for k in keys if k.startswith("runner-up ")]
    assert runner_up == [f"runner-up round {i}" for i in range(1, len(plan.runner_up) + 1)]
    assert keys.index(rounds[-1]) < (keys.index(runner_up[0]) if runner_up else len(keys))
    assert keys[-1] == "tta" or not plan.tta  # flipped views stay last, after every round
    if images == 20_000:
        assert plan.rounds[0].epochs < cfg.recipe.finetune_epochs and plan.views == 1
        assert any("the budget left buys fine-tuning round 1: top 1 block(s) (1 of 6 epochs)" in w for w in plan.why)
    assert bool(plan.runner_up) == (len(plan.backbones) > 1)
    # the runner-up's rounds that do not fit wait for time: shown, not summed, and said so
    spare = [s for s in plan.steps if s.spare]
    assert [s.key for s in spare] == runner_up[len(runner_up) - len(spare) :]
    table = planning.plan_table(plan)
    assert table.count("(only if time is left; not in the sum)") == len(spare)
    if (images, budget) in {(400, 300), (1_000, 450)}:
        assert len(spare) == len(plan.runner_up) == len(plan.rounds)
        assert any(f"round(s) 1-{len(spare)} run only if time is left" in w for w in plan.why)
    if (images, budget) == (400, 480):
        assert 0 < len(spare) < len(plan.runner_up)  # the rounds that fit are planned, the rest are spare


def test_a_plan_recorded_before_runner_ups_and_setups_reads_back_as_it_ran():
    cfg = build_config({"data": {"path": "x"}})
    plan = planning.make_plan(cfg, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    old = plan.to_dict()
    old.pop("runner_up")
    for r in old["rounds"]:
        r.pop("setup"), r.pop("stage")
    for s in old["steps"]:
        s.pop("spare")
    back = planning.Plan.from_dict(json.loads(json.dumps(old)))
    assert back.runner_up == [] and not any(s.spare for s in back.steps)
    assert all(r.setup == 0.0 and r.stage == 0.0 for r in back.rounds)
    assert [r.seconds for r in back.rounds] == [r.seconds for r in plan.rounds]


class _Probe:
    def __init__(self, ncm: float, scratch: float) -> None:
        self.ncm_accuracy, self.scratch_accuracy = ncm, scratch

    def to_dict(self) -> dict:
        return {"ncm": self.ncm_accuracy, "scratch": self.scratch_accuracy}

    def sentence(self) -> str:
        return "probe"


@pytest.mark.parametrize(
    "ncm,scratch,has_scratch,has_pretrained",
    [(0.6, 0.95, True, False), (0.8, 0.78, True, True), (0.9, 0.4, False, True)],
)
def test_the_probe_decides_the_candidates(ncm, scratch, has_scratch, has_pretrained):
    cfg = build_config({"data": {"path": "x"}})
    plan = planning.make_plan(cfg, _index(1_800, 10), _Profile(1_800, 32), _Probe(ncm, scratch), _Costs(COSTS))
    assert (plan.scratch is not None) == has_scratch
    assert bool(plan.backbones) == has_pretrained
    if has_scratch:
        assert plan.scratch.size == 32 and plan.scratch.epochs >= planning.SCRATCH_MIN_EPOCHS


def _tiny_digits(root: Path, per_class: int = 24) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (255 - img / 16.0 * 255).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(folder / f"{i:04d}.png")
    return root


def test_a_tiny_image_folder_gets_a_scratch_candidate_at_its_native_size(tmp_path):
    from smallvision.api import _scan
    from smallvision.auto.probe import imagenet_distance
    from smallvision.data.profile import profile_data

    data = _tiny_digits(tmp_path / "digits")
    cfg = build_config({"data": {"path": str(data)}})
    index = _scan(cfg)
    profile = profile_data(index)
    assert profile.tiny and profile.grayscale == 1.0
    probe = imagenet_distance(index, scratch_size=32, seed=0)
    assert probe.scratch_accuracy > probe.ncm_accuracy  # tiny grayscale digits are far from ImageNet photos
    plan = planning.make_plan(cfg, index, profile, probe, _Costs(COSTS))
    assert plan.scratch is not None and plan.scratch.size == 32
    assert any("from-scratch small_cnn at the native 32 px is a candidate" in w for w in plan.why)


@pytest.mark.parametrize("recipe,first_lr", [({}, 3e-4), ({"lr": 2e-3}, 6e-4), ({"finetune_lr": 5e-5}, 5e-5)])
def test_fine_tuning_rounds_start_at_three_tenths_of_the_lr_unless_the_user_sets_theirs(recipe, first_lr):
    cfg = build_config({"data": {"path": "x"}, "recipe": recipe})
    plan = planning.make_plan(cfg, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    assert [r.lr for r in plan.rounds] == pytest.approx([first_lr, first_lr / 2, first_lr / 4, first_lr / 8])


def test_fine_tuning_options_a_plan_cannot_use_are_named():
    values = {"data": {"path": "x"}, "recipe": {"finetune_epochs": 3, "augment": {"rotation_range": 20.0}}}
    tight = planning.make_plan(
        build_config({**values, "recipe": {**values["recipe"], "time_budget": 1}}),
        _index(400),
        _Profile(400, 150),
        None,
        _Costs(COSTS),
    )
    said = [w for w in tight.why if "set but not applied" in w]
    assert tight.rounds == [] and said and "--finetune-epochs" in said[0] and "--rotation-range" in said[0]
    roomy = planning.make_plan(build_config(values), _index(400), _Profile(400, 150), None, _Costs(COSTS))
    assert roomy.rounds and not any("set but not applied" in w for w in roomy.why)


def test_a_joined_backbone_runs_its_features_and_says_it_is_not_fine_tuned(shapes_data, tmp_path):
    joined = "efficientnet_lite0+efficientnet_lite1"
    r = smallvision.train(shapes_data, out=tmp_path / "joined", backbone=joined, **FAST)
    plan = _plan(r.run_dir)
    assert plan.backbones == [joined] and plan.rounds == []
    assert any("not a joined one" in w for w in plan.why)
    assert any("--finetune-epochs set but not applied" in n for n in r.notes)
    model, card = smallvision.load(r.model_dir)
    assert len(card.backbones) == 2 and card.trainable == ["head"] and len(model.backbones) == 2


def test_options_no_planned_stage_applies_are_named_from_the_stages_themselves():
    # a heads-only plan: one-cycle cycles sgd's momentum itself and has no warm-up; no stage caches activations
    recipe = {"optimizer": "sgd", "momentum": 0.8, "warmup_epochs": 2.0, "time_budget": 1}
    values = {"data": {"path": "x"}, "recipe": recipe, "trainer": {"memory_budget": 2.0}}
    plan = planning.make_plan(build_config(values), _index(400), _Profile(400, 150), None, _Costs(COSTS))
    said = [w for w in plan.why if "set but not applied" in w]
    assert plan.rounds == [] and plan.scratch is None and len(said) == 1
    named = said[0].split(" set but")[0].split(", ")
    assert sorted(named) == ["--memory-budget", "--momentum", "--warmup-epochs"]  # --optimizer ran: sgd heads
    roomy = planning.make_plan(
        build_config({**values, "recipe": {**recipe, "time_budget": 600}}),
        _index(400),
        _Profile(400, 150),
        None,
        _Costs(COSTS),
    )
    assert roomy.rounds and not any("set but not applied" in w for w in roomy.why)  # the rounds apply them


def _stage_value(resolved: dict, stage: dict, path: str):
    """A stage's resolved value at dotted `path`: its own, else the value its run's candidates share."""
    *sections, leaf = path.split(".")
    own, common = stage, resolved
    for s in sections:
        own, common = own.get(s, {}), common.get(s, {})
    return own[leaf] if leaf in own else common[leaf]


def test_config_yaml_metrics_and_tracker_values_are_what_each_candidate_ran(first):
    import csv
    import re

    from smallvision.config import read_resolved

    resolved = read_resolved(first.run_dir / "config.yaml")
    cands = resolved["candidates"]
    assert first.metrics["candidates"] == cands  # metrics.json holds the same record
    final = next(n for n in first.notes if n.startswith("auto: final model: "))
    chosen = [c for c in cands if c["chosen"]]
    assert cands[: len(chosen)] == chosen and all(c["name"] in final for c in chosen)  # the chosen one(s) first
    chose = next(n for n in first.notes if n.startswith("auto: chose "))
    among = re.search(r"(?:on validation \(|; on validation: )([^;]*)\)$", chose).group(1)  # cross-validated or not
    listed = dict((name, float(v)) for name, v in re.findall(r"(.+?) (\d\.\d{4})(?:, |$)", among))
    assert {c["name"]: c["val_accuracy"] for c in cands} == listed  # every candidate that ran, and only those
    for c in cands:
        head = c["stages"][0]
        kept = re.search(
            rf"auto: {c['name'].split()[0]} head on cached features: kept lr (\S+) ", " ".join(first.notes)
        )
        assert _stage_value(resolved, head, "recipe.lr") == float(kept.group(1))  # not the default 0.001
        assert _stage_value(resolved, head, "recipe.name") == "features"
        assert _stage_value(resolved, head, "data.image_size") == 64 and resolved["recipe"]["name"] == "auto"
    ran = list(dict.fromkeys(row["stage"] for row in csv.DictReader((first.run_dir / "history.csv").open())))
    assert [s["stage"] for s in chosen[0]["stages"]] == ran  # the chosen candidate's stages are history.csv's
    for c in cands:
        for rnd in c["stages"][1:]:  # fine-tuning rounds: their own blocks, rate and epochs (finetune2, finetune1b)
            i, whose = re.fullmatch(r"finetune(\d+)([bc]?)", rnd["stage"]).groups()
            planned = execute.Rounds(" bc".index(whose or " ")).of(_plan(first.run_dir))[int(i) - 1]
            assert _stage_value(resolved, rnd, "recipe.finetune_lr") == pytest.approx(planned.lr)
            assert _stage_value(resolved, rnd, "recipe.unfreeze_blocks") == planned.blocks
    report = (first.run_dir / "config.yaml").read_text()
    assert "candidates:" in report and "hidden: 512" not in report


def test_the_resolved_record_of_a_scratch_and_a_features_candidate_holds_their_own_values(tmp_path):
    import yaml

    from smallvision.config import dump_config, load_config

    cfg = build_config({"data": {"path": "x"}})
    labels = {"val": np.array([0, 1])}
    scratch_config = planning.scratch_config(cfg, planning.ScratchPlan(32, 7, [0], 1.0), 0)
    head_cfg = planning.member_config(cfg, "features", "efficientnet_lite0", 32, lr=3e-3)
    scratch = select.Candidate(
        "small_cnn from scratch", scratch_config, None, None, {"val": np.eye(2)}, labels, [], 5, ["all"], 32
    )
    scratch.stages = [("scratch", scratch_config)]
    head = select.Candidate(
        "efficientnet_lite0 features", head_cfg, None, [], {"val": np.eye(2)[::-1]}, labels, [], 3, ["head"], 32
    )
    head.stages = [("features efficientnet_lite0", head_cfg)]
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config({"data": {"path": "x"}}, execute.resolved_values(cfg, [scratch], [head, scratch])))
    resolved = yaml.safe_load(saved.read_text())["resolved"]
    assert load_config(saved) == {"data": {"path": "x"}}  # loading still ignores it
    first, second = resolved["candidates"]
    assert first["name"] == "small_cnn from scratch" and first["chosen"] and not second["chosen"]
    (s,), (h,) = first["stages"], second["stages"]
    assert _stage_value(resolved, s, "model.hidden") == 512 and _stage_value(resolved, s, "recipe.epochs") == 7
    assert _stage_value(resolved, h, "model.hidden") == 0 and _stage_value(resolved, h, "recipe.lr") == 3e-3
    assert _stage_value(resolved, s, "recipe.lr") == 1e-3 and _stage_value(resolved, h, "recipe.epochs") == 30
    assert "hidden" not in resolved["model"] and "lr" not in resolved["recipe"]  # they differ: each says its own
    assert resolved["data"]["image_size"] == 32 and resolved["recipe"]["time_budget"] == 600
    assert "finetune_lr" not in resolved["recipe"]  # no stage that ran fine-tuned


def test_the_planner_is_pure_and_only_the_figures_it_reaches_are_timed(tmp_path, monkeypatch):
    from smallvision.auto import costs as costing

    monkeypatch.setenv("SMALLVISION_CACHE_DIR", str(tmp_path))
    double = _Costs(COSTS)
    timed: list[str] = []

    def measure(self, missing: costing.MissingFigure) -> None:  # the double's figure, keyed as Costs keys it
        kind, *rest = missing.key.split("/")
        timed.append(missing.key)
        spec = type("Spec", (), {"backbone": rest[0]}) if kind != "decode" else None
        size = int(rest[1]) if len(rest) > 1 else 0
        blocks = int(rest[2]) if len(rest) > 2 and kind != "head" else 0
        self.figures[missing.key] = {
            "features": lambda: {"images_per_second": double.features(spec, size)},
            "finetune": lambda: double.finetune(spec, size, blocks),
            "finetune-images": lambda: double.finetune_images(spec, size, blocks),
            "activations": lambda: {"values_per_image": double.activations(spec, size, blocks)},
            "decode": double.decode,
            "head": lambda: double.head(int(rest[0]), rest[1] == "1", loss=rest[2]),
            "fp32": lambda: double.fp32_form(spec, size),
            "stage": lambda: {"stage_seconds": double.network_stage()},
            "augment": lambda: {"seconds_per_image": double.augment(None, size)},
            "bottom": lambda: double.bottom(spec, size),
        }[kind]()

    monkeypatch.setattr(costing.Costs, "measure", measure)
    cfg, index, profile = build_config({"data": {"path": "x"}}), _index(400), _Profile(400, 150)
    costs = costing.Costs("32-true")
    with pytest.raises(costing.MissingFigure):  # nothing measured: the planner asks, it does not time
        planning.make_plan(cfg, index, profile, None, costs)
    assert not costs.path.exists() and not timed
    plan = costing.planned(lambda c: planning.make_plan(cfg, index, profile, None, c), costs)
    assert timed == costs.used and len(set(timed)) == len(timed)  # each figure it read timed once, when reached
    assert not any(key.startswith("features/efficientnet_lite2/224") for key in timed)  # a size it never costed
    again = planning.make_plan(cfg, index, profile, None, costs)  # every figure known: the same plan, nothing timed
    assert again == plan and len(timed) == len(costs.used)


def test_rounds_are_costed_as_they_will_run_under_the_memory_budget_and_batch_size():
    def plan(**values):
        sections = {"recipe": {}, "trainer": {}}
        for key, value in values.items():
            sections["trainer" if key == "memory_budget" else "recipe"][key] = value
        costs = _Costs(COSTS)
        made = planning.make_plan(
            build_config({"data": {"path": "x"}, **sections}), _index(400), _Profile(400, 150), None, costs
        )
        return made, costs

    cached, _ = plan()
    assert cached.rounds and all("on cached activations" in s.step for s in cached.steps if "round" in s.step)
    # the same rounds when the cache cannot fit: costed on full images, as activation_views will run them
    full, _ = plan(memory_budget=0.01, time_budget=3000)
    rounds = [s for s in full.steps if "round" in s.step]
    assert rounds and all("on full images" in s.step and "over --memory-budget 0.01 GB" in s.step for s in rounds)
    same = [r for r in cached.rounds if r.blocks in {f.blocks for f in full.rounds}]
    assert min(r.seconds for r in full.rounds) > max(r.seconds for r in same)  # slower, and said so
    assert "on full images" in planning.plan_table(full)  # what the log prints before the work
    # every round pays the stage's fixed part and the one validation pass its verdict reads, whatever its epochs
    double = _Costs(COSTS)
    for made, figure in ((cached, double.finetune), (full, double.finetune_images)):
        slowest = type("Spec", (), {"backbone": min(made.backbones, key=COSTS.get)})  # what rounds are costed on
        for r in made.rounds:
            judged = -(-made.images["val"] // 32) * figure(slowest, made.size, r.blocks)["val_batch_seconds"]
            assert r.stage == pytest.approx(double.network_stage() + judged)
    big, costs = plan(batch_size=64)
    assert costs.batches == {64}  # timed at the batch the run trains at, not at 32
    _, default = plan()
    assert default.batches == {32}


def test_a_plan_made_after_a_resume_fits_what_is_left_of_the_budget():
    cfg = build_config({"data": {"path": "x"}})
    fresh = planning.make_plan(cfg, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    late = planning.make_plan(cfg, _index(400), _Profile(400, 150), None, _Costs(COSTS), spent=400.0)
    assert late.estimate_seconds <= planning.SAFETY * 600 - planning.RESERVED - 400 < fresh.estimate_seconds
    assert late.rung > fresh.rung and any("earlier process(es) took 400 s" in w for w in late.why)


def test_a_small_validation_split_plans_and_costs_cross_validated_head_choices():
    from smallvision.auto.plan import FOLDS, SMALL_VAL

    cfg, given = build_config({"data": {"path": "x"}}), build_config({"data": {"path": "x"}, "recipe": {"lr": 0.003}})
    small = planning.make_plan(cfg, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    one_rate = planning.make_plan(given, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    large = planning.make_plan(cfg, _index(5 * SMALL_VAL), _Profile(5 * SMALL_VAL, 150), None, _Costs(COSTS))
    assert (small.folds, one_rate.folds, large.folds) == (FOLDS, 0, 0)  # nothing to choose; a split that resolves
    assert any(f"{FOLDS}-fold cross-validation on the cached features of the 400 train+val" in w for w in small.why)
    assert not any("cross-validation" in w for w in one_rate.why + large.why)
    fresh = build_config({"data": {"path": "x"}, "recipe": {"init_from": "runs/old/model"}}, conditions=False)
    warm = planning.make_plan(fresh, _index(400), _Profile(400, 150), None, _Costs(COSTS))
    assert warm.folds == 0 and any("--init-from's head may have been trained on images" in w for w in warm.why)
    # each backbone's step pays its heads: two rates, each fitted once and FOLDS times more on the folds
    head = _Costs(COSTS).head(6, False)

    def fit(images: float) -> float:
        return head["stage_seconds"] + cfg.recipe.epochs * (
            head["epoch_seconds"] + head["sample_epoch_seconds"] * images
        )

    name = small.backbones[0]
    extra = small.seconds_of(f"features {name}") - one_rate.seconds_of(f"features {name}")
    assert extra == pytest.approx(fit(400) + 2 * FOLDS * fit(400 * (FOLDS - 1) / FOLDS))
    assert any("ranked on the 80 validation images alone, not cross-validated: --lr leaves" in w for w in one_rate.why)


def test_small_validation_splits_decide_heads_by_cross_validation_and_say_how_sure(first):
    plan, made = _plan(first.run_dir), decisions(smallvision.read_metrics(first.run_dir))
    n = plan.images["train"] + plan.images["val"]
    k = planning.FOLDS
    assert plan.folds == k and any(
        f"{k}-fold cross-validation on the cached features of the {n:,}" in w for w in plan.why
    )
    heads = [d.text for d in made if d.kind == "head-lr"]
    assert len(heads) == len(plan.backbones)
    for said in heads:  # each rate's out-of-fold score with its spread, and what validation alone said
        assert f"by {k}-fold cross-validation on the {n:,} train+val images (lr 0.001: " in said
        folded = dict(re.findall(r"(lr [\d.]+): (\d\.\d{4}) \+- \d\.\d{4}(?: \(loss [\d.]+\))?[,;]", said))
        kept = re.search(r"kept (lr [\d.]+) by", said).group(1)
        assert len(folded) == 2 and folded[kept] == max(folded.values())  # the better out of fold is kept
        assert "; on validation alone: lr 0.001: " in said
    ranked = next(d.text for d in made if d.kind == "uncertainty" and d.text.startswith("fine-tuned first: "))
    assert f"on the same {n} train+val images" in ranked or f"the {n} train+val images cannot tell" in ranked
