"""The real CLI: fit with fast_dev_run on synthetic and folder data, then test and predict from a checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.fake_data import write_folder_dataset
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main

TINY_MODEL = {
    "class_path": "vitdense.SegmentationTask",
    "init_args": {"backbone": PATCH8_VIT_D4, "head": {"channels": 16, "aux_channels": 8}},
}
TRAINER = {"accelerator": "cpu", "precision": "32", "enable_progress_bar": False, "enable_model_summary": False}


def write_config(path: Path, data: dict, model: dict | None = None, **trainer) -> Path:
    cfg = {"model": model or TINY_MODEL, "data": data, "trainer": {**TRAINER, **trainer}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def synthetic(**kwargs) -> dict:
    args = {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4, **kwargs}
    return {"class_path": "SyntheticSegmentationDataModule", "init_args": args}


def run(*args: str) -> object:
    return main(list(args))


def test_fit_synthetic_fast_dev_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", synthetic(), fast_dev_run=True, default_root_dir=str(tmp_path))
    cli = run("fit", "--config", str(cfg))
    assert cli.model.num_classes == 4  # linked from the DataModule
    assert cli.model.class_names == ["background", "circle", "rectangle", "triangle"]
    assert "val/mIoU" in cli.trainer.callback_metrics
    assert "val/IoU/background" in cli.trainer.callback_metrics


def test_fit_folder_links_classes_and_ignore_index(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data", void=254)
    data = {
        "class_path": "vitdense.data.SegmentationFolderDataModule",
        "init_args": {"root": str(root), "ignore_index": 255, "crop_size": 32, "batch_size": 2},
    }
    cfg = write_config(tmp_path / "c.yaml", data, fast_dev_run=True, default_root_dir=str(tmp_path))
    cli = run("fit", "--config", str(cfg), "--data.ignore_index", "254")
    assert cli.model.num_classes == 3
    assert cli.model.class_names == ["thing0", "thing1", "thing2"]
    assert cli.model.ignore_index == 254


def test_fit_then_test_and_predict_from_checkpoint(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "quick.yaml", synthetic(), max_epochs=1, default_root_dir=str(tmp_path / "runs"), log_every_n_steps=1
    )
    run("fit", "--config", str(cfg))
    run_dir = tmp_path / "runs" / "quick" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))

    cli = run("test", "--config", str(cfg), "--ckpt_path", str(last))
    assert "test/mIoU" in cli.trainer.callback_metrics
    assert (tmp_path / "runs" / "quick" / "version_1").is_dir()  # a new run folder, the fit's is untouched

    cli = run("predict", "--config", str(cfg), "--ckpt_path", str(last))
    out = sorted((tmp_path / "runs" / "predictions").glob("quick-*/*.png"))
    assert len(out) == 4
    mask = np.array(Image.open(out[0]))
    assert mask.shape == (32, 32) and mask.max() < 4


def test_predict_folder_masks_at_original_size(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((37, 61, 3), dtype=np.uint8)).save(photos / "a.png")
    Image.fromarray(np.zeros((50, 20), dtype=np.uint8)).save(photos / "b.jpg")
    data = {
        "class_path": "SegmentationFolderDataModule",
        "init_args": {"root": str(root), "crop_size": 32, "eval_size": 32, "batch_size": 2, "predict_dir": str(photos)},
    }
    cfg = write_config(tmp_path / "p.yaml", data, default_root_dir=str(tmp_path / "runs"))
    run("predict", "--config", str(cfg))
    (out,) = (tmp_path / "runs" / "predictions").glob("p-*")
    assert np.array(Image.open(out / "a.png")).shape == (37, 61)
    assert np.array(Image.open(out / "b.png")).shape == (50, 20)


def test_checkpoint_with_other_num_classes_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "q.yaml", synthetic(), fast_dev_run=True, default_root_dir=str(tmp_path))
    cli = run("fit", "--config", str(cfg))
    ckpt = tmp_path / "four.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    root = write_folder_dataset(tmp_path / "data", num_classes=3)
    data = {"class_path": "SegmentationFolderDataModule", "init_args": {"root": str(root), "crop_size": 32}}
    cfg2 = write_config(tmp_path / "f.yaml", data, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"num_classes=4 \(background, circle.*num_classes=3"):
        run("test", "--config", str(cfg2), "--ckpt_path", str(ckpt))


def test_help_lists_subcommands_and_arguments(capsys) -> None:
    with pytest.raises(SystemExit):
        run("--help")
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out
    with pytest.raises(SystemExit):
        run("fit", "--help")
    out = capsys.readouterr().out
    assert "--model" in out and "--data" in out


def test_help_documents_task_and_datamodule_arguments(capsys) -> None:
    with pytest.raises(SystemExit):
        run("fit", "--model.help", "SegmentationTask")
    out = capsys.readouterr().out
    for arg in ("--model.backbone", "--model.head", "--model.ignore_index", "--model.optimizer"):
        assert arg in out
    assert "decode head (name: upernet | linear" in out
    with pytest.raises(SystemExit):
        run("fit", "--data.help", "SegmentationFolderDataModule")
    out = capsys.readouterr().out
    assert "--data.root" in out and "Mask value of void pixels" in out


def test_validate_then_fit_in_one_process(tmp_path: Path) -> None:
    """`validate` runs under inference mode, fit's validation does not: metric states must survive the switch."""
    cfg = write_config(tmp_path / "c.yaml", synthetic(), max_epochs=1, default_root_dir=str(tmp_path), logger=False,
                       enable_checkpointing=False)  # fmt: skip
    cli = main(["--config", str(cfg)], run=False)
    first = cli.trainer.validate(cli.model, cli.datamodule)[0]["val/mIoU"]
    cli.trainer.fit(cli.model, cli.datamodule)
    again = cli.trainer.validate(cli.model, cli.datamodule)[0]["val/mIoU"]
    assert 0.0 <= first <= 1.0 and 0.0 <= again <= 1.0


@pytest.mark.parametrize(
    ("task", "own"),
    [("SegmentationTask", "ignore_index"), ("DetectionTask", "head"), ("ClassificationTask", "label_smoothing")],
)
def test_fit_help_documents_the_tasks_own_and_shared_arguments(task: str, own: str, capsys) -> None:
    """Tasks declare only their own arguments and pass the rest to BaseTask: the help still lists every one."""
    from vitdense.cli.entry import main

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", f"vitdense.{task}"])
    text = capsys.readouterr().out
    for name in (own, "num_classes", "backbone", "optimizer", "freeze_backbone", "ema_decay", "compile"):
        assert f"--model.{name} " in text, name
    described = " ".join(text.rsplit("--model.compile ", 1)[1].split())[:300]  # its entry, not the usage line
    assert "(type: bool, default: False)" in described


def test_no_cloud_logger_advert(tmp_path: Path, capsys, caplog) -> None:
    cfg = write_config(tmp_path / "c.yaml", synthetic(), fast_dev_run=True, default_root_dir=str(tmp_path))
    with caplog.at_level("INFO"):
        run("fit", "--config", str(cfg))
    assert "litlogger" not in caplog.text + "".join(capsys.readouterr())
    assert "GPU available" in caplog.text  # Lightning's other messages still come through


def test_help_lists_vitdense_subcommands_too(capsys) -> None:
    from vitdense.cli.commands import COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS) and "fit" in out
