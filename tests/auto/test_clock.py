"""auto by the clock: a round that no longer fits shrinks before it is dropped, a round still improving at its last
epoch continues, and every step's estimate is set against what it took."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from smallvision.auto import clock, execute
from smallvision.auto.plan import Round
from smallvision.results import RunNotes


def test_the_ledger_ratio_scales_the_rest_of_the_plan():
    ledger = clock.Ledger()
    assert ledger.ratio() == 1.0
    ledger.record("decode + features efficientnet_lite0", 100.0, 250.0)
    ledger.record("scratch", 0.0, 3.0)  # no estimate: recorded, not counted
    assert ledger.rows[0]["ratio"] == 2.5 and ledger.rows[1]["ratio"] is None
    assert ledger.ratio() == pytest.approx(2.5)
    ledger.record("round 1", 10.0, 100.0)
    assert ledger.ratio() == pytest.approx(350 / 110)
    ledger.record("round 2", 1.0, 1000.0)
    assert ledger.ratio() == 4.0  # capped: one misjudged step does not erase the rest


def test_each_step_s_images_per_second_is_over_its_whole_wall_time():
    ledger = clock.Ledger()
    ledger.record("decode + features efficientnet_lite0", 10.0, 12.34, images=500)
    ledger.record("features efficientnet_lite1", 10.0, 0.4, images=0)  # every feature was cached: no rate
    ledger.record("tta (val)", 2.0, 2.0)  # a step that counts no images
    ledger.record("round 1", 10.0, 0.0, images=72)  # a step the clock could not see: no rate rather than inf
    rows = ledger.rows
    assert (rows[0]["images"], rows[0]["images_per_second"]) == (500, round(500 / 12.34, 1))
    assert [r["images_per_second"] for r in rows[1:]] == [None, None, None]
    assert [r["images"] for r in rows[1:]] == [0, None, 72]


def test_a_round_is_foretold_by_the_rounds_before_it_else_by_every_step():
    ledger = clock.Ledger()
    ledger.record("decode + features efficientnet_lite2", 100.0, 80.0)
    ledger.record("timing efficientnet_lite2's fine-tuning steps", 4.0, 12.0)  # x3, shown but not work
    assert ledger.rows[-1]["ratio"] == 3.0 and not ledger.timed("timing")
    assert ledger.ratio("round") == 1.0  # no round yet: every step's (x0.8, never scaled down)
    ledger.record("features efficientnet_lite0", 100.0, 150.0)
    assert ledger.ratio("round") == pytest.approx(230 / 200)
    ledger.record("round 1", 50.0, 65.0)
    assert ledger.timed("round") and ledger.ratio("round") == pytest.approx(1.3)  # the rounds' own now
    ledger.record("runner-up round 1", 65.0, 78.0, remade=1.3)  # re-made from the plan's 50 s: x1.2 of it taken
    assert ledger.rows[-1]["ratio"] == 1.2 and ledger.rows[0]["remade"] == 1.0
    assert ledger.ratio("round") == pytest.approx((65 + 78) / (50 + 50))  # against the plan's figures, not x1.09


def test_a_round_after_rounds_is_re_made_from_theirs_and_says_so(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    ledger, notes = clock.Ledger(), RunNotes("auto")
    ledger.record("decode + features efficientnet_lite0", 200.0, 180.0)  # x0.9: the feature pass ran fast
    ledger.record("round 1", 100.0, 130.0)  # x1.3: the rounds run slow
    monkeypatch.setattr(clock, "now", lambda: 300.0)
    rnd = Round(blocks=1, epochs=10, lr=1e-3, seconds=100.0)
    # 600 s budget, 15 s kept: 285 s left; x1.3 of 100 s fits whole (all steps' x1.03 would have said 103 s)
    whole = execute._fitted_round(tmp_path, 2, [rnd] * 2, 0.0, 600.0, notes, ledger, execute.Rounds())
    assert (whole.epochs, whole.seconds, whole.remade) == (10, pytest.approx(130.0), 1.3)
    # 400 s budget: 85 s left of 130 s: 6 of 10 epochs, said on the rounds' figure
    short = execute._fitted_round(tmp_path, 3, [rnd] * 3, 0.0, 400.0, notes, ledger, execute.Rounds())
    assert short.epochs == 6 and "the rounds so far took x1.3 their estimates" in notes.decisions[-1].text
    record = json.loads((tmp_path / "checkpoints" / "auto_round3.json").read_text())
    assert (record["ratio"], record["basis"]) == (1.3, "the rounds so far")  # a resume says what this run said
    ledger.record("round 2", short.seconds, 80.0, short.remade)
    assert ledger.ratio("round") == pytest.approx((130 + 80) / (100 + 60))  # the plan's 60 s for 6 epochs


def test_a_round_that_no_longer_fits_shrinks_then_is_dropped(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    ledger, notes = clock.Ledger(), RunNotes("auto")
    ledger.record("decode + features efficientnet_lite2", 100.0, 200.0)  # the steps so far took twice their estimate
    monkeypatch.setattr(clock, "now", lambda: 300.0)
    rnd = Round(blocks=2, epochs=8, lr=1e-3, seconds=100.0)
    # 600 s budget, 300 s gone, 15 s kept: 285 s left for a round now estimated at 200 s: all 8 epochs
    kept = execute._fitted_round(tmp_path, 1, [rnd], 0.0, 600.0, notes, ledger, execute.Rounds())
    assert kept.epochs == 8 and (kept.seconds, kept.remade) == (200.0, 2.0)  # the estimate the clock used
    # 400 s budget: 85 s left of 200 s needed: 3 of 8 epochs, said so, and recorded for a resume
    short = execute._fitted_round(tmp_path, 2, [rnd] * 2, 0.0, 400.0, notes, ledger, execute.Rounds())
    assert short.epochs == 3 and short.seconds == pytest.approx(75.0)
    assert "round 2 shortened to 3 of its 8 epochs" in notes.decisions[-1].text
    assert json.loads((tmp_path / "checkpoints" / "auto_round2.json").read_text())["epochs"] == 3
    monkeypatch.setattr(clock, "now", lambda: 1000.0)  # a resume reads the recorded decision, not the clock
    assert execute._fitted_round(tmp_path, 2, [rnd] * 2, 0.0, 400.0, notes, ledger, execute.Rounds()).epochs == 3
    assert execute._fitted_round(tmp_path, 3, [rnd] * 3, 0.0, 400.0, notes, ledger, execute.Rounds()) is None
    assert notes.decisions[-1].kind == "stop" and "x2.0" in notes.decisions[-1].text
    # the runner-up's rounds are checked and recorded under their own names: the best's record does not decide them
    runner_up = execute.Rounds(1)
    assert execute._fitted_round(tmp_path, 2, [rnd] * 2, 0.0, 400.0, notes, ledger, runner_up) is None
    assert "before runner-up round 2" in notes.decisions[-1].text
    assert json.loads((tmp_path / "checkpoints" / "auto_round2b.json").read_text())["epochs"] == 0


def test_a_round_still_improving_at_its_last_epoch_continues_up_to_a_limit():
    notes = RunNotes("auto")
    planned = [Round(2, 6, 3e-4, 50.0), Round(3, 6, 7.5e-5, 60.0)]
    rounds = list(planned)
    execute._continued(1, rounds[0], rounds[0], best_epoch=5, rounds=rounds, notes=notes, who=execute.Rounds())
    assert rounds == planned  # its best epoch was not its last: validation had stopped rising
    for i in range(1, 6):
        execute._continued(
            i, rounds[i - 1], rounds[i - 1], best_epoch=6, rounds=rounds, notes=notes, who=execute.Rounds()
        )
    continued = [r for r in rounds if r.continues]
    assert len(continued) == execute.MAX_CONTINUED and rounds[-1] == planned[1]
    assert all((r.blocks, r.epochs, r.lr) == (2, 6, 3e-4) for r in continued)
    assert "round 1's best epoch was its last (6 of 6): validation was still rising" in notes.decisions[0].text


def test_rounds_keep_the_plans_numbers_and_a_continuation_is_named_after_the_round_it_continues():
    notes, who = RunNotes("auto"), execute.Rounds()
    rounds = [Round(1, 6, 3e-4, 50.0), Round(1, 6, 1.5e-4, 50.0), Round(2, 6, 7.5e-5, 60.0)]
    for i in (1, 2):
        execute._continued(i, rounds[i - 1], rounds[i - 1], best_epoch=6, rounds=rounds, notes=notes, who=who)
    names = [who.words(i, rounds) for i in range(1, len(rounds) + 1)]
    assert names == ["round 1", "round 1 (continued)", "round 1 (continued 2)", "round 2", "round 3"]
    assert "round 1 (continued)'s best epoch was its last" in notes.decisions[-1].text
    assert "so round 1 (continued 2) continues it" in notes.decisions[-1].text
    later = execute._later(3, rounds, execute.Rounds(1))
    assert later == "runner-up round 2, runner-up round 3"
    third = execute.Rounds(2)  # the third candidate's rounds: named, checked and staged apart from the others'
    assert (third.words(1, rounds), third.check(1), third.stage(1)) == ("third round 1", "round1c", "finetune1c")


def test_a_rounds_setup_is_paid_once_by_a_shortened_round_and_never_by_a_continuation(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    ledger, notes, who = clock.Ledger(), RunNotes("auto"), execute.Rounds()
    # 54 s caching activations, 6 s the stage's fixed part (the trainer, checkpoints), 5 s an epoch
    rnd = Round(blocks=2, epochs=8, lr=1e-3, seconds=100.0, setup=54.0, stage=6.0)
    monkeypatch.setattr(clock, "now", lambda: 500.0)
    # 600 s budget, 15 s kept: 85 s left, 60 of them setup and stage: 5 epochs, not the 6 a share of 100 s would give
    short = execute._fitted_round(tmp_path, 1, [rnd], 0.0, 600.0, notes, ledger, who)
    assert short.epochs == 5 and short.seconds == pytest.approx(60.0 + 5 * 5.0)
    rounds = [rnd]
    execute._continued(1, rnd, rnd, best_epoch=8, rounds=rounds, notes=notes, who=who)
    added = rounds[1]  # a continuation caches nothing but is a stage of its own
    assert added.continues and added.seconds == pytest.approx(46.0) and (added.setup, added.stage) == (0.0, 6.0)


def test_the_runner_ups_rounds_keep_the_flipped_views_time(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    plan = SimpleNamespace(tta=True, tta_seconds=15.0)  # one member's flips, as the plan costs them
    assert execute.Rounds().reserve(plan) == 0.0  # the best's rounds were planned before the flips: nothing kept
    runner_up = execute.Rounds(1)  # two members' flips kept: the best and the runner-up fine-tuned
    assert runner_up.reserve(plan) == 30.0 and runner_up.reserve(SimpleNamespace(tta=False, tta_seconds=15.0)) == 0
    assert execute.Rounds(2).reserve(plan) == 45.0  # the third: three members' flips
    monkeypatch.setattr(clock, "now", lambda: 500.0)
    rnd = Round(blocks=1, epochs=8, lr=1e-3, seconds=100.0, setup=20.0)  # 10 s an epoch
    # 85 s left, 30 of them the flips': 55 s for the round, 20 of them its setup: 3 epochs (6 without the reserve)
    kept = execute._fitted_round(tmp_path, 1, [rnd], 0.0, 600.0, RunNotes("auto"), clock.Ledger(), runner_up, 30.0)
    assert kept.epochs == 3
    assert json.loads((tmp_path / "checkpoints" / "auto_round1b.json").read_text())["epochs"] == 3


def test_the_budget_note_says_why_a_run_ended_early(monkeypatch):
    monkeypatch.setattr(execute, "now", lambda: 200.0)
    tally, notes = execute.Tally(), RunNotes("auto")
    tally.ended.append("efficientnet_lite2 round 1 did not improve validation (round 2, round 3 not run)")
    execute._budget_used(0.0, 600.0, tally, notes)
    said = notes.decisions[-1]
    assert said.kind == "budget" and said.text.startswith("used 200 s of --time-budget 600 s (33%): ended early")
    assert said.text.endswith(
        "because efficientnet_lite2 round 1 did not improve validation (round 2, round 3 not run)"
    )
    quick = execute.Tally()  # nothing stopped improving: the steps took less than their estimates
    quick.ledger.record("round 1", 300.0, 150.0)
    execute._budget_used(0.0, 600.0, quick, notes)
    assert notes.decisions[-1].text.endswith("the steps took x0.50 their estimates in all, so the plan ran short")
    monkeypatch.setattr(execute, "now", lambda: 560.0)
    execute._budget_used(0.0, 600.0, tally, notes)
    assert notes.decisions[-1].text == "used 560 s of --time-budget 600 s (93%)"  # a full run needs no reason


def test_a_candidate_at_the_highest_validation_score_gets_no_rounds(tmp_path):
    cfg = SimpleNamespace(recipe=SimpleNamespace(time_budget=600.0))
    plan = SimpleNamespace(rounds=[Round(1, 6, 3e-4, 50.0)], runner_up=[], tta=False, tta_seconds=0.0)
    base = SimpleNamespace(val=1.0, name="efficientnet_lite1 features")
    tally = execute.Tally()
    tuned = execute._finetune(cfg, plan, base, None, tmp_path, 0.0, False, RunNotes("auto"), None, tally)
    assert tuned is None and not (tmp_path / "checkpoints").exists()  # not even its clock check was made
    said = "efficientnet_lite1 features score 1.0000 on validation, a perfect score (no rounds run: they could only"
    assert tally.ended == [f"{said} lower its loss)"]


def test_an_optional_steps_check_keeps_its_estimates_and_a_resume_never_estimates_again(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.setattr(clock, "now", lambda: 500.0)
    check = clock.budget_check(tmp_path, "tta", 0.0, lambda: {"seconds": 90.04, "val": 60.04, "run": True}, 600.0)
    # 100 s left, 15 of them kept for saving: 90 s does not fit; a figure named like the decision's own never wins
    assert check == {"run": False, "elapsed": 500.0, "estimate": 90.0, "seconds": 90.0, "val": 60.0}

    def again() -> dict:
        raise AssertionError("a recorded check was estimated again")

    monkeypatch.setattr(clock, "now", lambda: 0.0)
    assert clock.budget_check(tmp_path, "tta", 0.0, again, 600.0) == check
