"""No option accepted and then ignored: every config field changes the run on every recipe that takes it, and is
refused, naming the option and the recipe, on every recipe that cannot apply it."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import smallvision
from smallvision.config import (
    APPLIES,
    FINE_TUNING,
    RECIPES,
    TWO_STAGE,
    build_config,
    leaf_fields,
    option_flag,
    user_set,
)
from smallvision.errors import SmallvisionError


def test_hidden_zero_means_no_hidden_layer_even_for_small_cnn(shapes_data, tmp_path):
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "scratch"}}).model.hidden == 512
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "features"}}).model.hidden == 0
    r = smallvision.train(
        shapes_data, recipe="scratch", hidden=0, image_size=32, epochs=1, out=tmp_path / "run", progress=False
    )
    model, card = smallvision.load(r.model_dir)
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert card.head.hidden == 0 and len(linears) == 1 and linears[0].in_features == 128 * 2 * 2
    saved = json.loads((r.model_dir / "smallvision.json").read_text())
    assert saved["head"]["hidden"] == 0


@pytest.mark.parametrize(
    "recipe,values,flag",
    [
        ("scratch", {"recipe": {"optimizer": "adam", "momentum": 0.5}}, "--momentum"),
        ("features", {"recipe": {"optimizer": "sgd", "momentum": 0.5}}, "--momentum"),  # head: onecycle cycles it
        ("scratch", {"recipe": {"schedule": "constant", "warmup_epochs": 2}}, "--warmup-epochs"),
        ("features", {"recipe": {"epochs": 3, "patience": 3}}, "--patience"),
        ("finetune", {"recipe": {"cached_views": 3, "augment": {"preset": "none"}}}, "--cached-views"),
        ("finetune", {"recipe": {"cached_views": 0}, "trainer": {"memory_budget": 2}}, "--memory-budget"),
        ("frozen", {"trainer": {"workers": 2}}, "--workers"),
        ("finetune", {"recipe": {"unfreeze_blocks": 2, "unfreeze_from": "blocks.5"}}, "--unfreeze-blocks"),
        ("finetune", {"recipe": {"layer_decay": 0.5}}, "--layer-decay"),
        ("scratch", {"recipe": {"augment": {"fill_mode": "wrap"}}}, "--fill-mode"),
        ("scratch", {"model": {"backbone": "residual_cnn", "batch_norm": True}}, "--batch-norm"),
        ("scratch", {"model": {"backbone": "small_cnn+residual_cnn"}}, "--backbone"),
    ],
)
def test_options_that_would_change_nothing_are_refused(recipe, values, flag):
    values = {**values, "data": {"path": "x"}, "recipe": {"name": recipe, **values.get("recipe", {})}}
    with pytest.raises(SmallvisionError, match=f"option {flag} .* does not apply to recipe {recipe}: "):
        build_config(values)


def test_defaults_filled_by_the_code_are_not_taken_for_the_users():
    cfg = build_config({"data": {"path": "x"}, "recipe": {"name": "features", "lr": 0.01}})
    assert user_set(cfg) == {"data.path": "x", "recipe.name": "features", "recipe.lr": 0.01}
    assert cfg.recipe.schedule == "onecycle" and cfg.recipe.finetune_lr is None and cfg.model.hidden == 0
    assert build_config({"data": {"path": "x"}, "recipe": {"name": "frozen"}}).recipe.schedule == "cosine"
    two = build_config({"data": {"path": "x"}, "recipe": {"name": "finetune"}}).recipe
    assert two.schedule is None and (two.schedule_for("head"), two.schedule_for("network")) == ("onecycle", "cosine")


# ---------------------------------------------------------------- every field x every recipe


@dataclass(frozen=True)
class Probe:
    """A value that must change a run, the options it needs beside it, and how the change is seen."""

    value: Any
    context: tuple = ()
    kind: str = "result"  # result: weights/history/probabilities differ; others: see _changed


def _precision_probe() -> Probe:
    from smallvision.engine.precision import resolve_precision

    return Probe("bf16-mixed" if resolve_precision("auto") == "32-true" else "32-true")


SINGLE = (("data.path", "single"),)
PROBES: dict[str, Probe] = {
    "data.path": Probe("two", kind="classes"),
    "data.image_size": Probe(64),
    "data.val_fraction": Probe(0.4, SINGLE, "split"),
    "data.test_fraction": Probe(0.3, SINGLE, "split"),
    "data.min_train_per_class": Probe(1000, SINGLE, "error"),
    "data.min_val_per_class": Probe(6, SINGLE + (("data.val_fraction", 0.05),), "split"),
    "data.min_test_per_class": Probe(6, SINGLE + (("data.test_fraction", 0.05),), "split"),
    "data.labels": Probe("merged.csv", (("data.path", "listed"),), "classes"),
    "data.task": Probe("multi", (("data.path", "listed"),)),
    "model.backbone": Probe("efficientnet_lite1"),  # residual_cnn on scratch (see _probe)
    "model.weights": Probe("random"),
    "model.pool": Probe("max", (("data.image_size", 64),)),  # at 32 px lite0's last map is 1x1: max == avg
    "model.dropout": Probe(0.0),
    "model.hidden": Probe(16),
    "model.batch_norm": Probe(True),
    "recipe.name": Probe(None, kind="axis"),
    "recipe.epochs": Probe(3),
    "recipe.lr": Probe(1e-2),
    "recipe.batch_size": Probe(8),
    "recipe.optimizer": Probe("sgd"),
    "recipe.momentum": Probe(0.5, (("recipe.optimizer", "sgd"), ("recipe.schedule", "constant"))),
    "recipe.schedule": Probe("constant"),
    "recipe.warmup_epochs": Probe(0.5, (("recipe.schedule", "cosine"),)),
    "recipe.weight_decay": Probe(0.1),
    "recipe.label_smoothing": Probe(0.2),
    "recipe.loss": Probe("asl", (("data.path", "listed"), ("data.task", "multi"))),
    "recipe.class_weights": Probe("balanced", (("data.path", "uneven"),)),
    "recipe.patience": Probe(1, (("recipe.epochs", 6),)),
    "recipe.unfreeze_blocks": Probe(2),
    "recipe.unfreeze_from": Probe("blocks.5"),
    "recipe.finetune_lr": Probe(1e-2),
    "recipe.finetune_epochs": Probe(2),
    "recipe.cached_views": Probe(2),
    "recipe.layer_decay": Probe(0.3, (("recipe.unfreeze_blocks", 3),)),
    "recipe.time_budget": Probe(0.01),
    "recipe.init_from": Probe("model", kind="init"),
    "recipe.augment.preset": Probe("standard"),
    "recipe.augment.rotation_range": Probe(30.0),
    "recipe.augment.width_shift_range": Probe(0.3),
    "recipe.augment.height_shift_range": Probe(0.3),
    "recipe.augment.shear_range": Probe(30.0),
    "recipe.augment.zoom_range": Probe(0.3),
    "recipe.augment.horizontal_flip": Probe(False),
    "recipe.augment.vertical_flip": Probe(True),
    "recipe.augment.fill_mode": Probe("constant", (("recipe.augment.rotation_range", 30.0),)),
    "trainer.devices": Probe(2, kind="devices"),
    "trainer.precision": _precision_probe(),
    "trainer.memory_budget": Probe(1e-6, kind="cache"),
    "trainer.workers": Probe(1, (("recipe.cached_views", 0),), "workers"),
    "trainer.logger": Probe("tensorboard", kind="tracker"),
    "seed": Probe(1),
    "out": Probe("elsewhere", kind="out"),
}


def _base(recipe: str) -> dict[str, Any]:
    base: dict[str, Any] = {"recipe.name": recipe, "data.image_size": 32, "recipe.epochs": 2}
    base["model.backbone"] = "small_cnn" if recipe == "scratch" else "efficientnet_lite0"
    if recipe in TWO_STAGE:
        base["recipe.finetune_epochs"] = 1
    return base


def _probe(path: str, recipe: str) -> Probe:
    probe = PROBES[path]
    if path == "model.backbone" and recipe == "scratch":
        return Probe("residual_cnn")
    return probe


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *sections, key = path.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[key] = value
    return out


def _copy(files: list[Path], folder: Path) -> None:
    for f in files:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.parent.name / f.name)


@pytest.fixture(scope="module")
def datasets(shapes_data, tmp_path_factory) -> dict[str, Path]:
    """shapes_data and folders made of its images (their features are already cached): one folder with no splits,
    two classes, classes of uneven size, and `listed`: every image in images/ with its class in labels.csv (one
    label each: single-label unless forced), beside merged.csv, which calls triangles squares."""
    root = tmp_path_factory.mktemp("option-data")
    train, val = (sorted((shapes_data / s).glob("*/*.png")) for s in ("train", "val"))
    _copy(train + val, root / "single")
    for split, files in (("train", train), ("val", val)):
        _copy([f for f in files if f.parent.name != "triangle"], root / "two" / split)
        keep = [f for f in files if f.parent.name == "circle" or split == "val" or int(f.stem[-3:]) < 8]
        _copy(keep, root / "uneven" / split)
    listed = root / "listed"
    (listed / "images").mkdir(parents=True)
    rows = []
    for f in train + val:
        shutil.copy(f, listed / "images" / f.name)
        rows.append((f.name, f.parent.name))
    (listed / "labels.csv").write_text("filename,labels\n" + "".join(f"{n},{c}\n" for n, c in rows))
    merged = "".join(f"{n},{'square' if c == 'triangle' else c}\n" for n, c in rows)
    (listed / "merged.csv").write_text("filename,labels\n" + merged)
    names = ("shapes", "single", "two", "uneven", "listed")
    return {name: shapes_data if name == "shapes" else root / name for name in names}


class Runs:
    """Real tiny runs of a recipe, memoised by options; each records what really ran besides its results."""

    def __init__(self, datasets: dict[str, Path], tmp: Path) -> None:
        self.datasets, self.tmp, self.seen, self.started = datasets, tmp, {}, 0

    def options(self, recipe: str, extra: dict[str, Any]) -> dict[str, Any]:
        flat = {**_base(recipe), **extra}
        flat["data.path"] = str(self.datasets[flat.get("data.path", "shapes")])
        if "data.labels" in flat:  # a labels file beside the folder's images
            flat["data.labels"] = str(Path(flat["data.path"]) / flat["data.labels"])
        return flat

    def run(self, recipe: str, extra: dict[str, Any]) -> dict[str, Any]:
        key = (recipe, tuple(sorted((k, repr(v)) for k, v in extra.items())))
        if key not in self.seen:
            self.seen[key] = self._run(recipe, extra)
        return self.seen[key]

    def _run(self, recipe: str, extra: dict[str, Any]) -> dict[str, Any]:
        import torch.utils.data

        from smallvision import api
        from smallvision.caching import activations
        from smallvision.engine import lightning
        from smallvision.recipes.base import RunContext
        from smallvision.recipes.registry import recipe_runner

        record: dict[str, Any] = {"workers": set(), "views": 0, "stages": []}
        loader_init = torch.utils.data.DataLoader.__init__
        compute_views = activations.compute_views
        fit_lightning = lightning.fit_lightning

        def spy_loader(self_, *args, **kwargs):
            loader_init(self_, *args, **kwargs)
            record["workers"].add(self_.num_workers)

        def spy_views(*args, **kwargs):
            record["views"] += 1
            return compute_views(*args, **kwargs)

        def spy_stage(model, data, spec, *args, **kwargs):  # every stage that trained, auto's unchosen ones too
            result = fit_lightning(model, data, spec, *args, **kwargs)
            record["stages"].append(
                (spec.name, [{k: v for k, v in row.items() if k != "time"} for row in result.history])
            )
            return result

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.utils.data.DataLoader, "__init__", spy_loader)
            mp.setattr(activations, "compute_views", spy_views)
            mp.setattr(lightning, "fit_lightning", spy_stage)
            try:
                cfg = build_config(_nest(self.options(recipe, extra)))
                index = api._scan(cfg)
                self.started += 1  # a folder per run: one holding a recorded auto plan would be followed
                run_dir = self.tmp / f"run{self.started}"
                outcome = recipe_runner(recipe)(RunContext(cfg, index, run_dir, progress=False))
            except SmallvisionError as e:
                return {"error": str(e)}
        record.update(
            state=outcome.state,
            history=[{k: v for k, v in row.items() if k != "time"} for row in outcome.history],
            probs=outcome.probs,
            classes=index.classes,
            split=index.counts(),
        )
        return record


def _succeeded(a: dict, b: dict) -> None:
    errors = [r["error"] for r in (a, b) if "error" in r]
    assert not errors, f"a run that should have changed failed instead: {errors}"


def _differs(a: dict, b: dict) -> bool:
    _succeeded(a, b)
    if a.keys() != b.keys():
        return True
    if a["history"] != b["history"] or a["state"].keys() != b["state"].keys():
        return True
    if any(not torch.equal(a["state"][k], b["state"][k]) for k in a["state"]):
        return True
    return any(not np.array_equal(a["probs"][s], b["probs"][s]) for s in a["probs"])


def _tuned(run: dict) -> list:
    """The fine-tuning stages a run trained (auto's too when it kept another candidate)."""
    return [stage for stage in run["stages"] if stage[0].startswith("finetune")]


def _fine_tuning_only(path: str, recipe: str) -> bool:
    """Options that auto (its backbone given, so no probe and no from-scratch candidate) reads only to fine-tune."""
    tuning = path.startswith("recipe.augment.") or path.removeprefix("recipe.") in FINE_TUNING
    return recipe == "auto" and (tuning or path == "trainer.memory_budget")


def _changed_what_reads_it(path: str, recipe: str, before: dict, after: dict) -> bool:
    """The model changed; for an option auto reads only to fine-tune, the fine-tuning it ran (its features head may
    still be the one kept)."""
    if not _fine_tuning_only(path, recipe):
        return _differs(before, after)
    _succeeded(before, after)
    return bool(_tuned(before)) and _tuned(before) != _tuned(after)


def _context(probe: Probe, recipe: str) -> dict[str, Any]:
    """The probe's companion options that the recipe takes (the others it would refuse)."""
    return {k: v for k, v in probe.context if recipe in APPLIES[k].recipes}


def _changed(path: str, recipe: str, runs: Runs, tmp: Path) -> bool:
    """Run the recipe without and with the field's probe value; True when the second run differs where it should."""
    probe = _probe(path, recipe)
    context = _context(probe, recipe)
    if probe.kind == "axis":
        return True  # the recipe itself: every other row of this test runs it
    if probe.kind == "out":
        out = tmp / "elsewhere"
        _train(recipe, context, runs, out)
        return (out / "model" / "model.safetensors").is_file() and (out / "metrics.json").is_file()
    if probe.kind == "devices":
        return _devices(recipe, runs)
    if probe.kind == "tracker":  # what ran: the tracker's event files hold the run's epochs (tests/test_trackers.py)
        out = tmp / "tracked"
        _train(recipe, {**context, path: probe.value}, runs, out)
        return any((out / "tensorboard").glob("events.out.tfevents.*"))
    value = probe.value
    if probe.kind == "init":
        value = str(_saved_model(recipe, runs, tmp))
    before, after = runs.run(recipe, context), runs.run(recipe, {**context, path: value})
    if probe.kind == "classes":
        return before["classes"] != after["classes"]
    if probe.kind == "split":
        return before["split"] != after["split"]
    if probe.kind == "error":
        return "error" in after and "error" not in before
    if probe.kind == "cache":
        return before["views"] == 1 and after["views"] == 0 and _changed_what_reads_it(path, recipe, before, after)
    if probe.kind == "workers":
        return before["workers"] == {0} and after["workers"] == {value}
    return _changed_what_reads_it(path, recipe, before, after)


def _saved_model(recipe: str, runs: Runs, tmp: Path) -> Path:
    """A model folder of the same recipe and shapes, trained with another seed (the source for --init-from)."""
    out = tmp / f"source-{recipe}"
    _train(recipe, {"seed": 5}, runs, out)
    return out / "model"


def _train(recipe: str, extra: dict[str, Any], runs: Runs, out: Path) -> None:
    """The recipe through smallvision.train, as a user runs it."""
    options = {k.rpartition(".")[2]: v for k, v in runs.options(recipe, extra).items() if k != "data.path"}
    options["recipe"] = options.pop("name")
    smallvision.train(runs.datasets["shapes"], out=out, progress=False, report=False, **options)


def _devices(recipe: str, runs: Runs) -> bool:
    """Lightning is asked for two DDP processes (stopped before it launches them: the DDP test trains for real)."""
    import lightning

    class Launched(Exception):
        pass

    seen = {}

    def fit(self, *args, **kwargs):
        seen.update(devices=self.num_devices, strategy=type(self.strategy).__name__)
        raise Launched

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lightning.Trainer, "fit", fit)
        with contextlib.suppress(Launched):
            runs._run(recipe, {"trainer.devices": 2})
    return seen == {"devices": 2, "strategy": "DDPStrategy"}


def _refused(path: str, recipe: str) -> None:
    probe = _probe(path, recipe)
    values = {**_base(recipe), **_context(probe, recipe), path: probe.value, "data.path": "x"}
    with pytest.raises(
        SmallvisionError,
        match=rf"option {re.escape(option_flag(path))} \({re.escape(path)}\) does not "
        rf"apply to recipe {recipe}: ",
    ):
        build_config(_nest(values))


def test_every_field_has_a_registry_entry_and_a_probe():
    fields = set(leaf_fields())
    assert fields == set(APPLIES), f"fields without an APPLIES entry: {fields - set(APPLIES)}"
    assert fields == set(PROBES), f"fields without a probe in this test: {fields - set(PROBES)}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_options_a_recipe_cannot_apply_are_refused(recipe):
    refused = [path for path, applies in APPLIES.items() if recipe not in applies.recipes]
    for path in refused:
        _refused(path, recipe)


@pytest.fixture(scope="module")
def runs(datasets, tmp_path_factory) -> Runs:
    return Runs(datasets, tmp_path_factory.mktemp("option-runs"))


@pytest.mark.parametrize("path", sorted(p for p, a in APPLIES.items() if "features" in a.recipes))
def test_every_option_changes_a_features_run(path, runs, tmp_path):
    assert _changed(path, "features", runs, tmp_path), f"{option_flag(path)} changed nothing on recipe features"


@pytest.mark.slow
def test_the_same_options_twice_change_nothing(runs):
    """The control for the probes below: a rerun differs in neither its model nor what it fine-tuned."""
    first, again = runs.run("auto", {}), runs._run("auto", {})
    assert _tuned(first), "auto's base run fine-tuned nothing: its fine-tuning probes would prove nothing"
    assert not _differs(first, again) and _tuned(first) == _tuned(again)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe,path", [(r, p) for r in RECIPES if r != "features" for p, a in sorted(APPLIES.items()) if r in a.recipes]
)
def test_every_option_changes_every_recipe_that_takes_it(recipe, path, runs, tmp_path):
    assert _changed(path, recipe, runs, tmp_path), f"{option_flag(path)} changed nothing on recipe {recipe}"


# ---------------------------------------------------------------- help texts, defaults and the manual: one source


def test_train_help_texts_are_the_config_fields_descriptions():
    import typer.main

    from smallvision.cli import app
    from smallvision.config import field_help

    command = typer.main.get_command(app).commands["train"]
    by_leaf = {path.rpartition(".")[2]: path for path in leaf_fields()}
    by_leaf.update({"data": "data.path", "recipe": "recipe.name", "augment": "recipe.augment.preset"})
    seen = set()
    for param in command.params:
        path = by_leaf.get(param.name)
        if path is None:
            assert param.name in {"config", "resume", "strict", "quiet"}, param.name
            continue
        seen.add(path)
        assert param.help == field_help(path), param.name
        assert "default: " in param.help or "(required)" in param.help, param.name
        assert param.default is None, f"--{param.name}: an unset flag must stay unset (None), not a copied default"
        flag = option_flag(path)
        assert flag == "DATA" or flag in param.opts, (flag, param.opts)
    assert seen == set(leaf_fields()), f"config fields with no train option: {set(leaf_fields()) - seen}"


def test_default_image_size_in_the_help_is_what_each_recipe_uses():
    from smallvision.config import field_help

    for recipe in RECIPES:
        cfg = build_config({"data": {"path": "x"}, "recipe": {"name": recipe}})
        size, backbone = cfg.data.image_size, cfg.model.backbone
        if recipe == "auto":  # chosen from the data when it plans, and the help says so
            assert size is None and backbone is None
            assert "auto chooses it from the data" in field_help("data.image_size")
            continue
        assert f"{size} for {backbone}" in field_help("data.image_size") or recipe == "scratch", recipe
    assert "260 for efficientnet_lite2" in field_help("data.image_size")


def test_the_manuals_option_table_is_generated_from_the_fields():
    from smallvision.config import options_table

    readme = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()
    start, end = "<!-- options: generated by smallvision.config.options_table() -->\n", "<!-- options end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == options_table(), "docs/options.md's table drifted; paste smallvision.config.options_table() in"


def test_the_manuals_recipe_table_is_generated_from_the_recipe_rows():
    from smallvision.recipe_specs import recipes_table

    readme = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    start, end = "<!-- recipes: generated by smallvision.recipe_specs.recipes_table() -->\n", "<!-- recipes end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == recipes_table(), (
        "docs/recipes.md's table drifted; paste smallvision.recipe_specs.recipes_table() in"
    )
