"""``vitdense sweep --config X --space space.yaml --trials N``: an Optuna study over any config keys.

Each trial is a real ``fit`` of the config with the trial's values merged in (its own run folder under the sweep
folder), scored by the task's monitored metric (its best validation). Optuna's TPE sampler proposes the values and its
median pruner stops a trial whose metric after a validation is below the median of the finished trials at that
validation, once ``--startup_trials`` (2) have finished. Trial 0 is the config's own values (``--baseline_trial``, on by
default, for every space key the config sets within its range), so the sweep scores the starting point under the same
budget and its best is never a draw that merely beat nothing. Pruning needs validations during a trial (a trial of 2
epochs under ``check_val_every_n_epoch: 2`` validates once, at its end). ``--prune_percentile`` (50, the median) lowers
the bar: 25 prunes only trials in the bottom quarter. On short trials the first validation predicts the last poorly (the
quickstart at 2 epochs: the best trial scored lower at its first validation than three of the four trials the median
pruned there; benchmarks/results/sweep_quickstart.md), so a lower percentile keeps more trials to the end.
The study lives in ``study.db`` (SQLite) in the sweep folder: run the same command again and it continues (trials
that were running when a sweep was killed are marked failed and not run again). At the end: ``trials.csv`` (the table
also printed), ``parallel_coordinate.png`` and ``best.yaml``, the config with the best trial's values, which
``fit --config`` takes (command-line overrides given to the sweep are not in it).

The space file maps dotted config keys to distributions::

    model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    model.init_args.optimizer.layer_decay: {type: float, low: 0.65, high: 1.0}
    model.init_args.backbone.drop_path_rate: {type: categorical, choices: [0.0, 0.1, 0.2]}
    data.init_args.batch_size: {type: int, low: 4, high: 16, step: 4}
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import yaml

STUDY_FILE = "study.db"
KINDS = ("float", "int", "categorical")


def load_space(path: Path) -> dict[str, dict[str, Any]]:
    """The search space, checked: every key a dotted config key, every entry a known distribution."""
    space = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(space, dict) or not space:
        example = "model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}"
        raise ValueError(f"{path}: give a mapping of dotted config keys to distributions, e.g. '{example}'.")
    for key, dist in space.items():
        kind = dist.get("type") if isinstance(dist, dict) else None
        if kind not in KINDS:
            raise ValueError(f"{path}: '{key}' needs type: one of {', '.join(KINDS)} (got {dist!r}).")
        needed = ("choices",) if kind == "categorical" else ("low", "high")
        missing = [k for k in needed if k not in dist]
        if missing:
            raise ValueError(f"{path}: '{key}' ({kind}) needs {' and '.join(missing)}.")
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's value of every key."""
    values = {}
    for key, dist in space.items():
        kind = dist["type"]
        if kind == "float":
            values[key] = trial.suggest_float(key, float(dist["low"]), float(dist["high"]), log=dist.get("log", False))
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(dist["low"]), int(dist["high"]), step=int(dist.get("step", 1)),
                                            log=dist.get("log", False))  # fmt: skip
        else:
            values[key] = trial.suggest_categorical(key, list(dist["choices"]))
    return values


def config_value(cfg: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of the config, or None where it has none."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def baseline_params(base: dict[str, Any], space: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The config's own value of every space key it sets inside the key's distribution, and a note for each key left
    to the sampler (unset in the config, or outside the range / choices)."""
    params, notes = {}, []
    for key, dist in space.items():
        value = config_value(base, key)
        if value is None or isinstance(value, (dict, list)):
            notes.append(f"{key}: not set in the config, sampled")
        elif dist["type"] == "categorical":
            if value in dist["choices"]:
                params[key] = value
            else:
                notes.append(f"{key}: config value {value!r} not among the choices {dist['choices']}, sampled")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and dist["low"] <= value <= dist["high"]:
            params[key] = int(value) if dist["type"] == "int" else float(value)
        else:
            notes.append(f"{key}: config value {value!r} outside [{dist['low']}, {dist['high']}], sampled")
    return params, notes


def merged_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted key set (dicts created where missing; other settings kept)."""
    cfg = copy.deepcopy(base)
    for key, value in values.items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"space key '{key}': '{part}' is {child!r} in the config, not a section.")
            node = child
        node[last] = value
    return cfg


ACTIVE_TRIAL: Any = None  # the trial being fitted (a callback in a YAML config cannot hold it)


class PruneOnValidation(L.Callback):
    """Reports the task's monitored metric to the running trial after each validation and stops the fit when the
    pruner says so (the trial then counts as pruned)."""

    def __init__(self) -> None:
        self.reports = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        monitor = getattr(pl_module, "monitor", "val/loss")
        value = trainer.callback_metrics.get(monitor)
        if trainer.sanity_checking or value is None or ACTIVE_TRIAL is None:
            return
        ACTIVE_TRIAL.report(float(value), self.reports)
        self.reports += 1
        if ACTIVE_TRIAL.should_prune():
            raise optuna.TrialPruned(f"{monitor} = {float(value):.4f} after validation {self.reports}")


def run_trial(trial: Any, base: dict[str, Any], space: dict[str, Any], folder: Path, extra: list[str]) -> float:
    """One fit (the CLI's, with its checkpoints, logs and summary) with the trial's values; its best monitored
    value (the best checkpoint's)."""
    global ACTIVE_TRIAL
    from vitdense.engine.builder import run_lightning

    values = suggest(trial, space)
    cfg = merged_config(base, values)
    trainer = cfg.setdefault("trainer", {})
    # With a logger, each trial's run folder is runs/trial_NNN/version_0 (the logger is named after the trial's config
    # file); without one, Lightning writes into default_root_dir itself, so each trial gets its own.
    no_logger = trainer.get("logger") is False
    trainer["default_root_dir"] = str(folder / "runs" / (f"trial_{trial.number:03d}" if no_logger else ""))
    trainer["callbacks"] = [
        *(trainer.get("callbacks") or []),
        {"class_path": "vitdense.tuning.sweep.PruneOnValidation"},
    ]
    path = folder / "trials" / f"trial_{trial.number:03d}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ACTIVE_TRIAL = trial
    try:
        cli = run_lightning(["fit", "--config", str(path), "--trainer.enable_progress_bar", "false", *extra])
    finally:
        ACTIVE_TRIAL = None
    trial.set_user_attr("run_folder", cli.trainer.log_dir)
    ckpt = cli.trainer.checkpoint_callback
    score = getattr(ckpt, "best_model_score", None)
    if score is not None:
        return float(score)
    raise RuntimeError(f"trial {trial.number}: no best checkpoint of {cli.model.monitor}; the fit needs a validation.")


def make_pruner(percentile: float, startup_trials: int) -> Any:
    """Optuna's pruner that stops a trial in the bottom ``percentile`` % of the finished trials at a validation: the
    median pruner at 50, else the percentile pruner (whose own percentile counts the trials kept, from the top)."""
    import optuna

    if not 0 <= percentile <= 100:
        raise ValueError(f"--prune_percentile {percentile}: give a percentile in [0, 100].")
    if percentile == 50:
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials)
    return optuna.pruners.PercentilePruner(100 - percentile, n_startup_trials=startup_trials)


def trials_table(study: Any) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: number, state, value, each parameter, the reason a trial failed."""
    keys = sorted({k for t in study.trials for k in t.params})

    def state(t: Any) -> str:  # the baseline trial (the config's own values) marked
        return t.state.name.lower() + (" (config)" if t.user_attrs.get("baseline") else "")

    rows = [[t.number, state(t), None if t.value is None else round(t.value, 5),
             *[t.params.get(k) for k in keys], t.user_attrs.get("error", "")] for t in study.trials]  # fmt: skip
    return ["trial", "state", "value", *keys, "error"], rows


def objective(trial: Any, base: dict[str, Any], space: dict[str, Any], folder: Path, extra: list[str]) -> float:
    """``run_trial``; a failure's reason is kept with the trial (the table's error column), not only in the log."""
    try:
        return run_trial(trial, base, space, folder, extra)
    except RuntimeError as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
        raise


def sweep_main(args: list[str]) -> str:
    """Run (or continue) a sweep; print and return the table and the best trial."""
    parser = argparse.ArgumentParser(prog="vitdense sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the config to sweep around")
    parser.add_argument("--space", required=True, type=Path, help="YAML: dotted config key -> distribution")
    parser.add_argument("--trials", type=int, default=12, help="trials in the study (a resumed study counts its own)")
    parser.add_argument("--output", type=Path, help="sweep folder (default: runs/sweep/<config>; reused to resume)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument("--startup_trials", type=int, default=2, help="finished trials before any pruning")
    parser.add_argument("--prune_percentile", type=float, default=50.0,
                        help="prune a trial below this percentile of the finished trials at a validation (50: the "
                        "median; lower prunes less; 0 only below all of them)")  # fmt: skip
    parser.add_argument(
        "--baseline_trial",
        choices=("true", "false"),
        default="true",
        help="trial 0 = the config's own values of the space keys (default true)",
    )
    own, extra = parser.parse_known_args(args)
    import optuna

    space = load_space(own.space)
    base = yaml.safe_load(Path(own.config).read_text()) or {}
    root = (base.get("trainer") or {}).get("default_root_dir") or "runs"
    folder = own.output or Path(root) / "sweep" / Path(own.config).stem
    folder.mkdir(parents=True, exist_ok=True)
    monitor_mode = _monitor_mode(base)
    storage, name = f"sqlite:///{folder / STUDY_FILE}", Path(own.config).stem
    # A resumed sweep seeds its sampler past the trials it has: the same seed would draw the first values again.
    known = len(optuna.load_study(study_name=name, storage=storage).trials) if (folder / STUDY_FILE).exists() else 0
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True,
        direction="maximize" if monitor_mode == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=own.seed + known),
        pruner=make_pruner(own.prune_percentile, own.startup_trials),
    )  # fmt: skip
    for t in study.trials:  # killed while running: failed, never run again
        if t.state == optuna.trial.TrialState.RUNNING:
            # the reason first: a finished trial takes no more attributes
            study._storage.set_trial_user_attr(t._trial_id, "error", "the sweep stopped while it ran (not rerun)")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    if own.baseline_trial == "true" and not study.trials:
        params, notes = baseline_params(base, space)
        if params:
            study.enqueue_trial(params, user_attrs={"baseline": True})
        print(f"trial 0: the config's own values {json.dumps(params)}" + "".join(f"\n  {n}" for n in notes), flush=True)
    unfinished = (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING)  # WAITING: the enqueued baseline
    done = sum(t.state not in unfinished for t in study.trials)
    remaining = max(0, own.trials - done)
    study.optimize(lambda trial: objective(trial, base, space, folder, extra), n_trials=remaining,
                   catch=(RuntimeError,))  # fmt: skip
    header, rows = trials_table(study)
    with open(folder / "trials.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    lines = ["  ".join(f"{h:>12s}" for h in header)]
    lines += ["  ".join(f"{'' if v is None else v!s:>12s}" for v in row) for row in rows]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        best_cfg = merged_config(base, best.params)
        (folder / "best.yaml").write_text(yaml.safe_dump(best_cfg, sort_keys=False))
        lines.append(f"best: trial {best.number}, value {best.value:.4f}, {json.dumps(best.params)}")
        if len(complete) >= 2:
            lines.append(f"wrote {plot_trials(study, folder / 'parallel_coordinate.png')}")
        lines.append(f"wrote {folder / 'best.yaml'} (vitdense fit --config {folder / 'best.yaml'}) and "
                     f"{folder / 'trials.csv'}; the study: {folder / STUDY_FILE} (run again to continue)")  # fmt: skip
    text = "\n".join(lines)
    print(text, flush=True)
    if not complete:
        errors = [t.user_attrs["error"] for t in study.trials if t.user_attrs.get("error")]
        first = f"; the first error: {errors[0]}" if errors else ""
        raise SystemExit(f"vitdense sweep: no trial of {folder / STUDY_FILE} completed{first}. The table: "
                         f"{folder / 'trials.csv'}.")  # fmt: skip
    return text


def plot_trials(study: Any, path: Path) -> Path:
    """Optuna's parallel-coordinate plot of the finished trials (each parameter an axis, lines coloured by value)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        ax = plot_parallel_coordinate(study)
    fig = ax.figure
    assert isinstance(fig, Figure)  # the plot's own figure, not a subfigure
    fig.set_size_inches(8, 4.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _monitor_mode(cfg: dict[str, Any]) -> str:
    """``max`` or ``min``: how the config's task ranks its monitored metric."""
    import vitdense.tasks

    name = str((cfg.get("model") or {}).get("class_path", "")).split(".")[-1]
    task = getattr(vitdense.tasks, name, None)
    if task is None:
        raise ValueError(f"model.class_path '{name}' is not a vitdense task; sweep needs one to know the metric.")
    return task.monitor_mode
