"""The real CLI for classification and detection: fit (synthetic and tmp_path folders), test, predict."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.fake_data import write_coco_folder, write_image_folder
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main

TRAINER = {"accelerator": "cpu", "precision": "32", "enable_progress_bar": False, "enable_model_summary": False}

CLS = {"class_path": "ClassificationTask", "init_args": {"backbone": PATCH8_VIT_D4}}

DET = {"class_path": "DetectionTask", "init_args": {"backbone": PATCH8_VIT_D4, "head": {"channels": 16}}}


def write(path: Path, model: dict, data: dict, **trainer) -> Path:
    path.write_text(yaml.safe_dump({"model": model, "data": data, "trainer": {**TRAINER, **trainer}}))
    return path


@pytest.fixture(scope="module")
def cls_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, Path]:
    """One synthetic classification fit through the CLI (its config, the fit's CLI, its last.ckpt), for the tests that
    test and predict from it and start a segmentation fit from it."""
    root = tmp_path_factory.mktemp("cls_fit")
    data = {
        "class_path": "SyntheticClassificationDataModule",
        "init_args": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4},
    }
    cfg = write(root / "cls.yaml", CLS, data, max_epochs=1, default_root_dir=str(root / "runs"))  # fmt: skip
    torch.manual_seed(0)  # as each test is seeded (module fixtures are set up before conftest's seed)
    cli = main(["fit", "--config", str(cfg)])
    return cfg, cli, root / "runs" / "cls" / "version_0" / "checkpoints" / "last.ckpt"


def test_classification_synthetic_fit_test_predict(cls_fit) -> None:
    cfg, cli, last = cls_fit
    assert cli.model.num_classes == 3 and "val/acc" in cli.trainer.callback_metrics
    cli = main(["test", "--config", str(cfg), "--ckpt_path", str(last)])
    assert {"test/acc", "test/f1"} <= set(cli.trainer.callback_metrics)
    main(["predict", "--config", str(cfg), "--ckpt_path", str(last)])
    (csv_file,) = (cfg.parent / "runs" / "predictions").glob("cls-*/predictions.csv")
    rows = csv_file.read_text().splitlines()
    assert rows[0].startswith("path,label,class_name,score") and len(rows) == 5


def test_classification_folder_fast_dev_run(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "data")
    data = {"class_path": "ImageFolderDataModule", "init_args": {"root": str(root), "image_size": 32, "batch_size": 2,
                                                                  "randaugment": True}}  # fmt: skip
    cli = main(["fit", "--config", str(write(tmp_path / "c.yaml", CLS, data, fast_dev_run=True))])
    assert cli.model.class_names == ["ants", "bees"]


def test_detection_synthetic_fit_test_predict(tmp_path: Path) -> None:
    data = {
        "class_path": "SyntheticDetectionDataModule",
        "init_args": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4},
    }
    cfg = write(tmp_path / "det.yaml", DET, data, max_epochs=1, default_root_dir=str(tmp_path / "runs"))  # fmt: skip
    cli = main(["fit", "--config", str(cfg)])
    assert {"val/mAP", "val/mAP_50", "val/mAP_75", "val/loss"} <= set(cli.trainer.callback_metrics)
    last = tmp_path / "runs" / "det" / "version_0" / "checkpoints" / "last.ckpt"
    cli = main(["test", "--config", str(cfg), "--ckpt_path", str(last)])
    assert "test/mAP" in cli.trainer.callback_metrics
    main(["predict", "--config", str(cfg), "--ckpt_path", str(last)])
    (out,) = (tmp_path / "runs" / "predictions").glob("det-*/predictions.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and {"path", "boxes", "scores", "labels", "class_names"} <= set(lines[0])


def test_detection_coco_folder_and_predict_in_original_pixels(tmp_path: Path) -> None:
    root = write_coco_folder(tmp_path / "data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((90, 150, 3), 128, dtype=np.uint8)).save(photos / "wide.jpg")
    data = {
        "class_path": "CocoDetectionDataModule",
        "init_args": {"root": str(root), "image_size": 64, "batch_size": 1, "predict_dir": str(photos)},
    }
    model = {**DET, "init_args": {**DET["init_args"], "head": {"channels": 16, "score_thresh": 0.0}}}
    cfg = write(tmp_path / "d.yaml", model, data, default_root_dir=str(tmp_path / "runs"), fast_dev_run=True)
    cli = main(["fit", "--config", str(cfg)])
    assert cli.model.class_names == ["raccoon"]
    main(["predict", "--config", str(cfg)])
    (out,) = (tmp_path / "runs" / "predictions").glob("d-*/predictions.jsonl")
    boxes = np.array(json.loads(out.read_text().splitlines()[0])["boxes"])
    assert len(boxes) and boxes[:, 2].max() <= 150.01 and boxes[:, 3].max() <= 90.01
    assert boxes[:, 2].max() > 64  # scaled back from the 64-pixel model input to the 150-pixel original


def test_segmentation_fit_from_classification_checkpoint(tmp_path: Path, cls_fit) -> None:
    _, _, ckpt = cls_fit
    seg = {
        "class_path": "SegmentationTask",
        "init_args": {"backbone": {**PATCH8_VIT_D4, "pretrained": str(ckpt)}, "head": {"channels": 16}},
    }
    seg_data = {
        "class_path": "SyntheticSegmentationDataModule",
        "init_args": {"num_train": 8, "num_val": 4, "image_size": 32, "batch_size": 4},
    }
    seg_cfg = write(tmp_path / "seg.yaml", seg, seg_data, max_epochs=1, default_root_dir=str(tmp_path / "runs"))
    cli = main(["fit", "--config", str(seg_cfg)])
    assert "val/mIoU" in cli.trainer.callback_metrics
