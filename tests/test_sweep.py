"""``vitdense sweep``: an Optuna study of real fits that prunes on the per-validation metric, resumes from its SQLite
study without running a trial twice, and writes a best config that ``fit`` takes."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main

optuna = pytest.importorskip("optuna")

import vitdense.tuning.sweep as sweep  # noqa: E402


def test_a_trial_below_the_median_is_pruned_after_its_validation() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, 0)
        study.tell(trial, value)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    module = SimpleNamespace(monitor="val/mIoU")
    try:
        for value, pruned in ((0.85, False), (0.1, True)):  # the median of the earlier trials is 0.85
            sweep.ACTIVE_TRIAL = study.ask()
            trainer.callback_metrics["val/mIoU"] = torch.tensor(value)
            if pruned:
                with pytest.raises(optuna.TrialPruned):
                    sweep.PruneOnValidation().on_validation_end(trainer, module)
            else:
                sweep.PruneOnValidation().on_validation_end(trainer, module)
            assert sweep.ACTIVE_TRIAL.storage.get_trial(sweep.ACTIVE_TRIAL._trial_id).intermediate_values == {
                0: pytest.approx(value)
            }
    finally:
        sweep.ACTIVE_TRIAL = None


def test_a_lower_percentile_prunes_only_the_bottom_of_the_finished_trials() -> None:
    assert isinstance(sweep.make_pruner(50, 2), optuna.pruners.MedianPruner)
    study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(25, 2))
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, 0)
        study.tell(trial, value)
    for value, pruned in ((0.84, False), (0.81, True)):  # below the median 0.85; the 25th percentile is 0.825
        trial = study.ask()
        trial.report(value, 0)
        assert bool(trial.should_prune()) == pruned
    with pytest.raises(ValueError, match="prune_percentile 120"):
        sweep.make_pruner(120, 2)


def test_space_errors_name_the_key(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("model.init_args.optimizer.lr: {type: float, low: 1.0e-4}\n")
    with pytest.raises(ValueError, match=r"'model.init_args.optimizer.lr' \(float\) needs high"):
        sweep.load_space(space)
    space.write_text("model.init_args.optimizer.lr: {type: loguniform}\n")
    with pytest.raises(ValueError, match="needs type: one of float, int, categorical"):
        sweep.load_space(space)


LR_SPACE = "model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


def tiny_sweep(tmp_path: Path, trainer: dict, data: dict, model: dict, space: str = LR_SPACE) -> tuple[list[str], Path]:
    """The ``sweep`` command (without --trials) of a config named seg.yaml: the 2-block patch-8 ViT with a tiny
    UPerNet on synthetic 32-pixel images, the given trainer / data / model settings on top, and the space; and the
    sweep's output folder."""
    backbone = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}
    cfg = {
        "model": {"class_path": "vitdense.SegmentationTask", "init_args": {"backbone": backbone, "log_images": 0,
                                                                           **model}},
        "data": {"class_path": "SyntheticSegmentationDataModule", "init_args": {"image_size": 32, **data}},
        "trainer": {"accelerator": "cpu", "enable_model_summary": False, **trainer},
    }  # fmt: skip
    config, space_file, out = tmp_path / "seg.yaml", tmp_path / "space.yaml", tmp_path / "sweep"
    config.write_text(yaml.safe_dump(cfg))
    space_file.write_text(space)
    return ["sweep", "--config", str(config), "--space", str(space_file), "--output", str(out)], out


def test_trials_without_a_logger_get_a_run_folder_each(tmp_path: Path) -> None:
    """With ``trainer.logger: false`` every trial used to write into the same folder: the second trial's fit refused
    to overwrite the first's config.yaml and failed (and checkpoints would have mixed)."""
    args, out = tiny_sweep(tmp_path, {"max_epochs": 1, "logger": False},
                           {"num_train": 4, "num_val": 2, "batch_size": 2},
                           {"head": {"channels": 8, "aux_channels": 4}, "optimizer": {"lr": 1e-3}})  # fmt: skip
    main([*args, "--trials", "2"])
    study = optuna.load_study(study_name="seg", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for n in (0, 1):
        run = out / "runs" / f"trial_{n:03d}"
        assert (run / "config.yaml").is_file() and len(list((run / "checkpoints").glob("*.ckpt"))) >= 1


def test_a_sweep_whose_trials_all_fail_exits_with_the_reason(tmp_path: Path) -> None:
    args, out = tiny_sweep(tmp_path, {"max_epochs": 1, "logger": False, "enable_checkpointing": False},
                           {"num_train": 2, "num_val": 2, "batch_size": 2},
                           {"head": {"channels": 8, "aux_channels": 4}})  # fmt: skip
    with pytest.raises(SystemExit, match=r"no trial of .*study.db completed; the first error: RuntimeError: trial 0: "
                       "no best checkpoint of val/mIoU"):  # fmt: skip
        main([*args, "--trials", "1"])
    table = (out / "trials.csv").read_text().splitlines()
    assert table[0].endswith(",error") and "no best checkpoint" in table[1]


def test_baseline_trial_takes_the_configs_values_inside_the_space() -> None:
    base = {"model": {"init_args": {"optimizer": {"lr": 3e-4, "layer_decay": 0.9, "head_lr_mult": 10},
                                    "backbone": {"drop_path_rate": 0.1}}}}  # fmt: skip
    space = {
        "model.init_args.optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "model.init_args.optimizer.layer_decay": {"type": "categorical", "choices": [0.75, 0.85]},
        "model.init_args.optimizer.head_lr_mult": {"type": "int", "low": 1, "high": 5},
        "model.init_args.backbone.drop_path_rate": {"type": "float", "low": 0.0, "high": 0.3},
        "model.init_args.scheduler.warmup_steps": {"type": "int", "low": 0, "high": 100},
    }
    params, notes = sweep.baseline_params(base, space)
    assert params == {"model.init_args.optimizer.lr": 3e-4, "model.init_args.backbone.drop_path_rate": 0.1}
    assert notes == [
        "model.init_args.optimizer.layer_decay: config value 0.9 not among the choices [0.75, 0.85], sampled",
        "model.init_args.optimizer.head_lr_mult: config value 10 outside [1, 5], sampled",
        "model.init_args.scheduler.warmup_steps: not set in the config, sampled",
    ]


@pytest.mark.slow  # 3 tiny fits: ~15 s on 2 shared cores
def test_sweep_resumes_without_running_a_trial_twice(tmp_path: Path) -> None:
    args, out = tiny_sweep(
        tmp_path, {"max_epochs": 2}, {"num_train": 8, "num_val": 4, "batch_size": 4},
        {"head": {"channels": 16, "aux_channels": 8},
         "optimizer": {"lr": 1e-3, "layer_decay": 0.9, "head_lr_mult": 10.0}},
        LR_SPACE + "model.init_args.optimizer.layer_decay: {type: categorical, choices: [0.75, 0.9]}\n",
    )  # fmt: skip
    main([*args, "--trials", "2"])
    study = optuna.load_study(study_name="seg", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # trial 0 is the config's own values, marked as such
    assert study.trials[0].params == {
        "model.init_args.optimizer.lr": 1e-3,
        "model.init_args.optimizer.layer_decay": 0.9,
    }
    assert study.trials[0].user_attrs["baseline"] and "baseline" not in study.trials[1].user_attrs
    study.ask()  # a trial left running, as when a sweep is killed
    text = main([*args, "--trials", "3"])
    study = optuna.load_study(study_name="seg", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"] and len(states) == 4 and states[3] in ("COMPLETE", "PRUNED")
    assert study.trials[2].user_attrs["error"] == "the sweep stopped while it ran (not rerun)"
    assert len({t.params["model.init_args.optimizer.lr"] for t in study.trials if t.params}) == 3
    assert sorted(p.name for p in (out / "trials").glob("*.yaml")) == ["trial_000.yaml", "trial_001.yaml",
                                                                        "trial_003.yaml"]  # fmt: skip
    assert (out / "trials.csv").read_text().count("\n") == 5 and "best: trial" in text
    assert (out / "parallel_coordinate.png").stat().st_size > 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    opt = best["model"]["init_args"]["optimizer"]
    assert opt["lr"] == study.best_trial.params["model.init_args.optimizer.lr"] and opt["head_lr_mult"] == 10.0
    built = main(["--config", str(out / "best.yaml"), "--trainer.logger", "false"], run=False)
    assert built.model.optimizer_cfg["layer_decay"] == study.best_trial.params["model.init_args.optimizer.layer_decay"]
