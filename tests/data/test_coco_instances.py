"""COCO instance masks: polygons and RLE read with pycocotools, masks that follow their boxes through the transforms,
and clear errors for segmentations that do not fit their image or box."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main
from vitdense.data import CocoInstanceDataModule
from vitdense.data.datamodules.coco import CocoDetectionDataset
from vitdense.data.transforms import detection_eval_transform, detection_train_transform

H, W = 60, 80
SQUARE = [10, 10, 30, 10, 30, 30, 10, 30]  # polygon of the box [10, 10, 30, 30]


def region(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def write_instances(root: Path, annotations: list[dict] | None = None) -> Path:
    rle = mask_utils.encode(np.asfortranarray(region(40, 20, 70, 50)))
    default = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": [SQUARE]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40, 20, 30, 30],
         "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
    ]  # fmt: skip
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / split / "images" / "a.png")
        coco = {
            "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
            "annotations": [{"iscrowd": 0, **a} for a in (annotations or default)],
            "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "blob"}],
        }
        (root / split / "annotations.json").write_text(json.dumps(coco))
    return root


def dataset(root: Path, transform=None) -> CocoDetectionDataset:
    return CocoDetectionDataset(root / "val" / "images", root / "val" / "annotations.json", transform=transform,
                                masks=True)  # fmt: skip


def test_polygons_and_rle_become_masks(tmp_path: Path) -> None:
    item = dataset(write_instances(tmp_path), detection_eval_transform(None))[0]
    masks = item["target"]["masks"].numpy()
    assert masks.dtype == np.uint8 and masks.shape == (2, H, W)
    assert np.array_equal(masks[1], region(40, 20, 70, 50))  # the RLE, exactly
    # pycocotools rasterises the polygon [10, 30] x [10, 30] with its edge pixels: within one pixel of the box.
    ys, xs = np.nonzero(masks[0])
    assert abs(xs.min() - 10) <= 1 and abs(xs.max() + 1 - 30) <= 1 and abs(ys.min() - 10) <= 1
    assert item["target"]["labels"].tolist() == [0, 1]


@pytest.mark.parametrize("train", [False, True])
def test_masks_follow_their_boxes_through_resizes_and_crops(tmp_path: Path, train: bool) -> None:
    transform = detection_train_transform(48, (0.5, 1.5), 1.0) if train else detection_eval_transform(40)
    data = dataset(write_instances(tmp_path), transform)
    for _ in range(8 if train else 1):
        item = data[0]
        image, target = item["image"], item["target"]
        assert target["masks"].shape == (len(target["boxes"]), *image.shape[-2:])
        for box, mask in zip(target["boxes"].numpy(), target["masks"].numpy(), strict=True):
            ys, xs = np.nonzero(mask)
            extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(extent - box).max() <= 2.5, (extent, box)


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"segmentation": None}, "has no segmentation"),
        ({"segmentation": [[10, 10, 95, 10, 95, 30]]}, r"reaching \(10\.\.95, 10\.\.30\) outside its 80x60 image"),
        ({"segmentation": {"size": [30, 40], "counts": "abc"}}, r"size \[30, 40\] but the image is 60x80"),
        ({"segmentation": [[10, 10, 20]]}, "at least three x, y pairs"),
    ],
)
def test_segmentations_that_cannot_be_masks_name_the_annotation(tmp_path: Path, annotation, message) -> None:
    bad = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], **annotation}
    with pytest.raises(ValueError, match=f"Annotation id 7 in .*{message}"):
        dataset(write_instances(tmp_path, [bad]))


def test_a_mask_far_from_its_box_is_an_error(tmp_path: Path) -> None:
    far = {"id": 9, "image_id": 1, "category_id": 1, "bbox": [50, 30, 20, 20], "segmentation": [SQUARE]}
    data = dataset(write_instances(tmp_path, [far]))
    with pytest.raises(ValueError, match=r"Annotation id 9 in .*do not describe the same object"):
        data[0]


def test_cli_fits_an_instance_model_on_coco_masks(tmp_path: Path) -> None:
    root = write_instances(tmp_path / "data")
    cfg = {
        "model": {"class_path": "InstanceSegmentationTask",
                  "init_args": {"backbone": PATCH8_VIT_D4, "head": {"channels": 32, "roi_batch_size": 16,
                                                                    "box_head_width": 32}}},
        "data": {"class_path": "CocoInstanceDataModule", "init_args": {"root": str(root), "image_size": 64,
                                                                       "batch_size": 1}},
        "trainer": {"fast_dev_run": True, "accelerator": "cpu", "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(config)])
    assert isinstance(cli.datamodule, CocoInstanceDataModule) and cli.model.class_names == ["square", "blob"]
    assert "val/mask_mAP" in cli.trainer.callback_metrics
