"""Slow checks on the real samples in ../shared/data (skipped when they are not there): `pytest -m slow`."""

from pathlib import Path

import pytest

from vitdense.cli.entry import main

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    not (SHARED / "data" / "camvid_sample").is_dir() or not (SHARED / "weights").is_dir(),
    reason="no ../shared/data/camvid_sample or ../shared/weights",
)
def test_camvid_sample_trains_and_validates(tmp_path: Path) -> None:
    cli = main(
        [
            "fit",
            "--config", str(CONFIGS / "segmentation_folder.yaml"),
            "--data.root", str(SHARED / "data" / "camvid_sample"),
            "--model.init_args.backbone.pretrained", str(SHARED / "weights" / "vit_tiny_patch16_224.safetensors"),
            "--data.num_classes", "11",
            "--data.ignore_index", "11",
            "--data.num_workers", "0",
            "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    assert cli.model.class_names[0] == "Sky" and cli.model.ignore_index == 11
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["val/mIoU"]) <= 1.0
    assert (tmp_path / "segmentation_folder" / "version_0" / "checkpoints" / "last.ckpt").is_file()
