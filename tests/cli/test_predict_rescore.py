"""Predicted PNG masks are the scored predictions: re-scored with numpy against the ground truth, they give the
test/mIoU the task logs."""

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.fake_data import write_folder_dataset
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli import main


def test_predicted_masks_rescored_with_numpy_give_the_logged_miou(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data", num_classes=3, sizes=((40, 48), (36, 52), (44, 40)))
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": PATCH8_VIT_D4, "head": {"channels": 16},
                                                                  "optimizer": {"lr": 1e-3}}},
        # eval_size 32: images are resized for the model, and its logits resized back to each mask's resolution.
        "data": {"class_path": "SegmentationFolderDataModule",
                 "init_args": {"root": str(root), "crop_size": 32, "eval_size": 32, "batch_size": 2,
                               "predict_dir": str(root / "test" / "images")}},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "runs").glob("seg/version_0/checkpoints/last.ckpt")
    logged = main(["test", "--config", str(config), "--ckpt_path", str(ckpt)]).trainer.callback_metrics
    main(["predict", "--config", str(config), "--ckpt_path", str(ckpt)])
    (out,) = (tmp_path / "runs" / "predictions").glob("seg-*")

    k, void = 3, 255
    confusion = np.zeros((k, k), np.int64)
    for mask_path in sorted((root / "test" / "masks").glob("*.png")):
        truth = np.array(Image.open(mask_path))
        pred = np.array(Image.open(out / mask_path.name))
        assert pred.shape == truth.shape
        valid = truth != void
        confusion += np.bincount(truth[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    miou = np.mean(tp[union > 0] / union[union > 0])
    assert abs(miou - float(logged["test/mIoU"])) < 1e-6
    assert abs(tp.sum() / confusion.sum() - float(logged["test/pixel_acc"])) < 1e-6
