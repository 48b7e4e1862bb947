"""Two CPU processes (DDP over gloo): metrics are reduced over every process before they are computed."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vitdense import SegmentationTask
from vitdense.data import SyntheticSegmentationDataModule
from vitdense.tasks.segmentation import segmentation_scores


def test_ddp_val_miou_equals_single_process_miou_over_the_whole_split(tmp_path: Path) -> None:
    model = {"class_path": "SegmentationTask", "init_args": {
        "backbone": {"name": "vit_tiny_patch16_224", "pretrained": False, "img_size": 32,
                     "model_kwargs": {"patch_size": 8, "depth": 4, "embed_dim": 32, "num_heads": 2}},
        "head": {"channels": 16, "aux_channels": 8}}}  # fmt: skip
    # 6 val images over 2 processes x batch 2: each rank sees its own 3 images, one batch of them ragged.
    data = {"class_path": "SyntheticSegmentationDataModule",
            "init_args": {"num_train": 8, "num_val": 6, "image_size": 32, "batch_size": 2}}  # fmt: skip
    trainer = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 1, "precision": "32",
               "enable_progress_bar": False, "enable_model_summary": False}  # fmt: skip
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({"model": model, "data": data, "trainer": trainer}))
    result = subprocess.run([sys.executable, "-m", "vitdense", "fit", "--config", str(cfg)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp" / "version_0"
    ddp_miou = _last_value(run / "metrics.csv", "val/mIoU")

    task = SegmentationTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    dm = SyntheticSegmentationDataModule(num_train=8, num_val=6, image_size=32, batch_size=6)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    metric = task.metrics["val"]
    with torch.no_grad():
        metric.update(task(batch["image"]).argmax(1), batch["mask"])
    assert ddp_miou == pytest.approx(segmentation_scores(metric.compute())["mIoU"].item(), abs=1e-5)


def _last_value(path: Path, column: str) -> float:
    import csv

    rows = [r for r in csv.DictReader(path.open()) if r.get(column)]
    return float(rows[-1][column])
