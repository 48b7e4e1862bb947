"""Each label format trains one step through the real CLI from configs/segmentation_folder.yaml with only data keys
changed (a tiny backbone on the command line); predictions come out in the data's class colours."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.data import test_label_errors as errors
from tests.data.label_fixtures import COLORS, write_color_splits, write_one_folder
from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main
from vitdense.data import SegmentationFolderDataModule

CONFIG = Path(__file__).parents[2] / "configs" / "segmentation_folder.yaml"
TINY = ["--model.init_args.backbone", json.dumps({**PATCH8_VIT_D2, "img_size": None}),
        "--model.init_args.head", json.dumps({"channels": 16, "aux_channels": 8}),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false"]  # fmt: skip


def config(tmp_path: Path, name: str = "seg", **data) -> Path:
    """configs/segmentation_folder.yaml with its data keys replaced by ``data``."""
    cfg = yaml.safe_load(CONFIG.read_text())
    args = cfg["data"]["init_args"]
    args.pop("num_classes", None)
    args.update({"crop_size": 32, "eval_size": 32, "batch_size": 2, "num_workers": 0, **data})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(cfg: Path, tmp_path: Path, *extra: str):
    return main(["fit", "--config", str(cfg), *TINY, "--trainer.default_root_dir", str(tmp_path / "runs"), *extra])


def test_colour_masks_train_and_predict_in_the_datas_colours(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_color_splits(root)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((20, 28, 3), np.uint8)).save(photos / "p.png")
    cfg = config(tmp_path, root=str(root), predict_dir=str(photos))
    cli = fit(cfg, tmp_path, "--trainer.max_steps", "1", "--trainer.num_sanity_val_steps", "0",
              "--trainer.limit_val_batches", "1")  # fmt: skip
    assert cli.model.hparams.class_colors == COLORS and cli.model.num_classes == 3
    last = tmp_path / "runs" / "seg" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", "--config", str(cfg), *TINY, "--trainer.default_root_dir", str(tmp_path / "runs"),
          "--ckpt_path", str(last)])  # fmt: skip
    (out,) = (tmp_path / "runs" / "predictions").glob("seg-*/p.png")
    png = Image.open(out)
    assert png.mode == "P" and png.size == (28, 20)
    palette = np.array(png.getpalette()[:9]).reshape(3, 3)
    np.testing.assert_array_equal(palette, COLORS)


def test_one_folder_split_is_saved_with_the_run_and_reused_by_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_one_folder(root, n=10)
    cfg = config(tmp_path, root=str(root), val_fraction=0.2, test_fraction=0.2, seed=1)
    cli = fit(cfg, tmp_path, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1")
    saved = cli.datamodule.split
    run = tmp_path / "runs" / "seg" / "version_0"
    assert (run / "split" / "test.txt").read_text().split() == saved["test"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["SegmentationFolderDataModule"] == {
        "split": saved
    }
    write_one_folder(root, n=14)  # the folder gains images: a fresh split would differ
    assert SegmentationFolderDataModule(str(root), test_fraction=0.2, seed=1).split_samples()["test"] != saved["test"]
    cli = main(["test", "--config", str(cfg), *TINY, "--trainer.default_root_dir", str(tmp_path / "runs"),
                "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # fmt: skip
    tested = [Path(p).stem for p, _ in cli.datamodule.dataset("test").samples]
    assert tested == saved["test"] and "test/mIoU" in cli.trainer.callback_metrics


@pytest.mark.parametrize("fmt", ["coco", "labelme", "cvat"])
def test_polygon_formats_train_one_step(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    data = {"coco": errors.coco, "labelme": errors.labelme, "cvat": errors.cvat}[fmt](root)
    cfg = config(tmp_path, root=str(root), val_fraction=0.34, annotations=fmt, polygons={"line_width": 3}, **data)
    cli = fit(cfg, tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.class_names == ["background", "road", "car"] and "val/mIoU" in cli.trainer.callback_metrics
    assert not (tmp_path / "split").exists()  # fast_dev_run has no run folder: no split lists in the working dir
