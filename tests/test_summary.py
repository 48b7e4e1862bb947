"""The run summary: every CLI fit writes summary.json into its run folder, and its best metric is the best
checkpoint's (validating that checkpoint gives the same number)."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main
from vitdense.tasks.summary import SUMMARY_FILE


def test_summary_json_matches_the_best_checkpoint(tmp_path: Path, capsys) -> None:
    backbone = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {
            "backbone": backbone, "head": {"channels": 16, "aux_channels": 8}, "optimizer": {"lr": 3e-3},
            "log_images": 0}},
        "data": {"class_path": "SyntheticSegmentationDataModule",
                 "init_args": {"num_train": 8, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(config)])
    run = Path(cli.trainer.log_dir)
    summary = json.loads((run / SUMMARY_FILE).read_text())
    out = capsys.readouterr().out
    assert "run summary (finished): best val/mIoU" in out
    # Each checkpoint is named once: the summary's lines, not again by the CLI after them.
    assert out.count("best checkpoint: ") == 1 and out.count("last checkpoint: ") == 1
    assert summary["status"] == "finished" and summary["monitor"] == "val/mIoU" and summary["mode"] == "max"
    assert summary["epochs"] == 3 and summary["steps"] == 6 and summary["train_images"] == 24
    assert summary["images_per_s"] > 0 and summary["peak_memory_mib"] > 0
    assert Path(summary["best_checkpoint"]).parent == Path(summary["checkpoint_dir"]) == run / "checkpoints"
    assert summary["last_checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    # The best value is the best of the per-epoch values logged in metrics.csv, at the epoch the summary names.
    with open(run / "metrics.csv") as f:
        logged = {int(r["epoch"]): float(r["val/mIoU"]) for r in csv.DictReader(f) if r.get("val/mIoU")}
    assert len(logged) == 3 and summary["best"] == pytest.approx(max(logged.values()), abs=1e-6)
    assert logged[summary["best_epoch"]] == pytest.approx(summary["best"], abs=1e-6)
    # Validating the best checkpoint gives the summary's number.
    validated = main(["validate", "--config", str(config), "--ckpt_path", summary["best_checkpoint"],
                      "--trainer.logger", "false"])  # fmt: skip
    assert float(validated.trainer.callback_metrics["val/mIoU"]) == pytest.approx(summary["best"], abs=1e-6)


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def uncomment_early_stopping(text: str) -> str:
    """The config with its commented ``trainer.callbacks`` EarlyStopping entry switched on."""
    lines, on = [], False
    for line in text.splitlines():
        on = line == "  # callbacks:" or (on and line.startswith("  #   "))
        lines.append(line.replace("  # ", "  ", 1) if on else line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name + "/" + p.name)
def test_every_template_has_early_stopping_on_its_tasks_monitor(path: Path) -> None:
    import vitdense

    cfg = yaml.safe_load(uncomment_early_stopping(path.read_text()))
    (callback,) = cfg["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning.pytorch.callbacks.EarlyStopping"
    task = getattr(vitdense, cfg["model"]["class_path"].split(".")[-1])
    assert callback["init_args"]["monitor"] == task.monitor and callback["init_args"]["mode"] == task.monitor_mode
    assert callback["init_args"]["patience"] >= 1


def test_uncommented_early_stopping_builds(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EarlyStopping

    config = tmp_path / "quickstart.yaml"
    config.write_text(uncomment_early_stopping((CONFIG_DIR / "quickstart.yaml").read_text()))
    cli = main(["--config", str(config), "--trainer.logger", "false"], run=False)
    (stopper,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/mIoU", "max", 3)


def folder_config(root: Path, data: Path) -> Path:
    """A tiny segmentation fit on the folder dataset ``data``, logged into ``root/runs``."""
    backbone = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {
            "backbone": backbone, "head": {"channels": 16, "aux_channels": 8}, "log_images": 0}},
        "data": {"class_path": "SegmentationFolderDataModule", "init_args": {
            "root": str(data), "num_classes": 3, "crop_size": 32, "batch_size": 2, "num_workers": 0}},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(root / "runs")},
    }  # fmt: skip
    path = root / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def break_mask(data: Path) -> None:
    """A training image whose mask is missing: the dataset scan (DataModule setup) fails."""
    (data / "train" / "masks" / "0.png").unlink()


def corrupt_image(data: Path) -> None:
    """Training images cut short: their headers (what the dataset scan reads) are whole, so the fit fails loading the
    first training batch, after the sanity validation."""
    for path in (data / "train" / "images").iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def fail(monkeypatch, method: str) -> None:
    """The task's ``method`` fails: ``configure_optimizers`` while the Trainer sets the fit up, ``shared_step`` in the
    first training step (as an out-of-memory error would), after the sanity validation."""
    from vitdense import SegmentationTask

    original = getattr(SegmentationTask, method)

    def failing(self, *args):
        if method == "shared_step" and args[-1] != "train":
            return original(self, *args)
        raise RuntimeError(f"{method} failed")

    monkeypatch.setattr(SegmentationTask, method, failing)


@pytest.mark.parametrize("failure", ["data_setup", "optimizer_setup", "first_batch", "first_step"])
def test_a_fit_that_fails_early_reports_its_own_time(tmp_path: Path, monkeypatch, capsys, failure: str) -> None:
    import time

    from tests.fake_data import write_folder_dataset

    data = write_folder_dataset(tmp_path / "data", sizes=((40, 48), (36, 52), (40, 40), (44, 36)))
    if failure == "data_setup":
        break_mask(data)
    elif failure == "first_batch":
        corrupt_image(data)
    else:
        fail(monkeypatch, "configure_optimizers" if failure == "optimizer_setup" else "shared_step")
    config = folder_config(tmp_path, data)
    started = time.perf_counter()
    with pytest.raises(Exception):  # noqa: B017 (each failure raises its own error; the summary is what is tested)
        main(["fit", "--config", str(config)])
    elapsed = time.perf_counter() - started
    (path,) = (tmp_path / "runs").rglob(SUMMARY_FILE)
    summary = json.loads(path.read_text())
    assert summary["status"].startswith("stopped by") and summary["steps"] == 0 and summary["train_images"] == 0
    # The run's own seconds (not the clock's since boot), of which validation is a part; no training, no throughput.
    assert 0 <= summary["wall_time_s"] <= elapsed + 0.01  # a setup failure can take under 5 ms (rounds to 0.0)
    assert 0 <= summary["validation_time_s"] <= summary["wall_time_s"] and summary["images_per_s"] == 0
    assert (summary["validation_time_s"] > 0) == (failure in ("first_batch", "first_step"))  # the sanity check ran
    assert f"0 steps in {summary['wall_time_s']:.1f} s" in capsys.readouterr().out


def test_the_cli_names_the_checkpoints_itself_only_where_no_summary_is_printed(tmp_path: Path) -> None:
    import lightning.pytorch as L

    from vitdense.tasks.summary import RunSummary

    def trainer(**kwargs) -> L.Trainer:
        return L.Trainer(default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, **kwargs)

    assert RunSummary.printed(trainer(callbacks=[RunSummary()]))
    assert not RunSummary.printed(trainer(callbacks=[RunSummary()], logger=False))  # no run folder, no summary
    assert not RunSummary.printed(trainer(callbacks=[RunSummary()], fast_dev_run=True))
    assert not RunSummary.printed(trainer())  # a trainer without the callback
