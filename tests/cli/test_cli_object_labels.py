"""LabelMe and CVAT objects train one step through the real CLI from configs/detection_coco.yaml and
configs/instance_coco.yaml with only data keys changed (a tiny model on the command line); a one-folder split is
saved with the run and reused by test from its checkpoint."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.data.object_fixtures import cvat_scene, labelme_folder, labelme_scene
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main
from vitdense.data import CocoDetectionDataModule

CONFIGS = Path(__file__).parents[2] / "configs"
HEADS = {
    "detection": {"name": "retinanet", "channels": 32, "anchor_scale": 4.0},
    "instance": {"name": "mask_rcnn", "channels": 32, "roi_batch_size": 16, "box_head_width": 32},
}
CPU = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
       "false"]  # fmt: skip


def config(tmp_path: Path, task: str, **data) -> Path:
    """configs/{detection,instance}_coco.yaml with its data keys replaced by ``data``."""
    cfg = yaml.safe_load((CONFIGS / f"{task}_coco.yaml").read_text())
    cfg["data"]["init_args"].update({"image_size": 64, "batch_size": 1, "num_workers": 0, **data})
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(command: str, cfg: Path, tmp_path: Path, task: str, *extra: str):
    tiny = ["--model.init_args.backbone", json.dumps(PATCH8_VIT_D4), "--model.init_args.head", json.dumps(HEADS[task])]
    return main([command, "--config", str(cfg), *tiny, *CPU, "--trainer.default_root_dir", str(tmp_path / "runs"),
                 *extra])  # fmt: skip


@pytest.mark.parametrize("task", ["detection", "instance"])
@pytest.mark.parametrize("fmt", ["labelme", "cvat"])
def test_labelme_and_cvat_train_one_step(tmp_path: Path, fmt: str, task: str) -> None:
    root = tmp_path / "data"
    scene = {"labelme": labelme_scene, "cvat": cvat_scene}[fmt]
    for split in ("train", "val"):
        scene(root / split)
    cfg = config(tmp_path, task, root=str(root), annotations=fmt)
    cli = run("fit", cfg, tmp_path, task, "--trainer.fast_dev_run", "true")
    assert cli.model.class_names == ["car", "person"]
    assert ("val/mask_mAP" if task == "instance" else "val/mAP") in cli.trainer.callback_metrics
    target = cli.datamodule.dataset("val")[0]["target"]
    assert len(target["boxes"]) == {"labelme": 4, "cvat": 3}[fmt] and ("masks" in target) == (task == "instance")


def test_one_folder_split_is_saved_with_the_run_and_reused_by_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    labelme_folder(root, n=10)
    cfg = config(tmp_path, "detection", root=str(root), val_fraction=0.2, test_fraction=0.2, seed=1)
    cli = run("fit", cfg, tmp_path, "detection", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1")
    saved = cli.datamodule.split
    run_dir = tmp_path / "runs" / "detection" / "version_0"
    assert (run_dir / "split" / "test.txt").read_text().split() == saved["test"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["CocoDetectionDataModule"] == {"split": saved}
    labelme_folder(root, n=14)  # the folder gains images: a fresh split would differ
    fresh = CocoDetectionDataModule(str(root), val_fraction=0.2, test_fraction=0.2, seed=1)
    assert [p.stem for p, _ in fresh.split_samples()["test"]] != saved["test"]
    cli = run("test", cfg, tmp_path, "detection", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))
    tested = [r.path.stem for r in cli.datamodule.dataset("test").records]
    assert tested == saved["test"] and "test/mAP" in cli.trainer.callback_metrics
