"""COCO detection data: contiguous labels, resized items and boxes, box clean-up, and every annotation error named."""

import json
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from vitdense.data import CocoDetectionDataModule
from vitdense.data.datamodules.coco import CocoDetectionDataset, read_categories
from vitdense.data.transforms import bbox_params, to_tensor

CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 1, "name": "bird"}, {"id": 3, "name": "cat"}]


def write_coco(
    folder: Path,
    images: list[tuple[str, int, int]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] = CATEGORIES,
    mode: str = "RGB",
) -> Path:
    """Write ``images`` ((file_name, w, h); image ids 1, 2, ...) under ``folder/images`` and their COCO JSON."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, (name, w, h) in enumerate(images, start=1):
        Image.new(mode, (w, h)).save(folder / "images" / name)
        entries.append({"id": image_id, "file_name": name, "width": w, "height": h})
    anns = [{"id": i, "iscrowd": 0, **ann} for i, ann in enumerate(annotations, start=1)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return path


def ann(image_id: int, category_id: int, bbox: list[float], **extra: Any) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    """train and val: a 40x20 RGB image with two boxes, a 30x30 grayscale one with a box, and a negative."""
    for split in ("train", "val"):
        write_coco(
            tmp_path / split,
            [("a.png", 40, 20), ("c.jpg", 16, 24)],
            [ann(1, 3, [4, 2, 10, 6]), ann(1, 7, [20, 10, 8, 8])],
        )
        Image.new("L", (30, 30), 200).save(tmp_path / split / "images" / "b.png")
        data = json.loads((tmp_path / split / "annotations.json").read_text())
        data["images"].append({"id": 3, "file_name": "b.png", "width": 30, "height": 30})
        data["annotations"].append({"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 15, 30], "iscrowd": 0})
        (tmp_path / split / "annotations.json").write_text(json.dumps(data))
    return tmp_path


def test_categories_map_to_contiguous_labels(coco_root: Path) -> None:
    dm = CocoDetectionDataModule(str(coco_root), image_size=80)
    assert dm.num_classes == 3 and dm.class_names == ["bird", "cat", "dog"]
    item = dm.dataset("val")[0]
    assert item["target"]["labels"].tolist() == [1, 2]  # cat (id 3) -> 1, dog (id 7) -> 2


def test_eval_items_are_resized_by_their_long_side(coco_root: Path) -> None:
    dm = CocoDetectionDataModule(str(coco_root), image_size=80)
    item = dm.dataset("val")[0]  # 40x20 -> 80x40
    assert item["image"].shape == (3, 40, 80) and item["image"].dtype == torch.float32
    assert item["orig_size"] == (20, 40) and item["valid_size"] == (40, 80)
    assert item["target"]["boxes"].dtype == torch.float32 and item["target"]["labels"].dtype == torch.int64
    expected = torch.tensor([[8.0, 4.0, 28.0, 16.0], [40.0, 20.0, 56.0, 36.0]])  # the 40x20 boxes scaled by 2
    torch.testing.assert_close(item["target"]["boxes"], expected)
    assert item["path"].endswith("images/a.png")


def test_batches_are_lists_of_differently_sized_images(coco_root: Path) -> None:
    dm = CocoDetectionDataModule(str(coco_root), image_size=48, batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"image", "target", "path", "orig_size", "valid_size"}
    assert [tuple(img.shape) for img in batch["image"]] == [(3, 24, 48), (3, 48, 32), (3, 48, 48)]
    assert [len(t["boxes"]) for t in batch["target"]] == [2, 0, 1]
    assert batch["valid_size"] == [(24, 48), (48, 32), (48, 48)]
    train = next(iter(dm.train_dataloader()))
    assert all(img.shape == (3, 48, 48) for img in train["image"])
    for target in train["target"]:
        boxes = target["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(target["labels"])
        assert (boxes >= 0).all() and (boxes <= 48).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_grayscale_image_loads_as_rgb(coco_root: Path) -> None:
    item = CocoDetectionDataModule(str(coco_root), image_size=30).dataset("val")[2]
    assert item["image"].shape == (3, 30, 30)
    assert torch.allclose(item["image"], torch.full((3, 30, 30), 200 / 255))


def test_images_without_boxes_are_kept(coco_root: Path) -> None:
    item = CocoDetectionDataModule(str(coco_root), image_size=24).dataset("val")[1]  # c.jpg has no annotation
    assert item["target"]["boxes"].shape == (0, 4) and item["target"]["boxes"].dtype == torch.float32
    assert item["target"]["labels"].shape == (0,) and item["target"]["labels"].dtype == torch.int64


def test_boxes_follow_a_horizontal_flip(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], [ann(1, 3, [4, 2, 10, 6])])
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[2:8, 4:14] = 255  # the box's content
    Image.fromarray(pixels).save(tmp_path / "images" / "a.png")
    flip = A.Compose([A.HorizontalFlip(p=1.0), *to_tensor()], bbox_params=bbox_params())
    item = CocoDetectionDataset(tmp_path / "images", json_path, transform=flip)[0]
    assert item["target"]["boxes"].tolist() == [[26.0, 2.0, 36.0, 8.0]]
    x0, y0, x1, y1 = (int(v) for v in item["target"]["boxes"][0])
    assert (item["image"][:, y0:y1, x0:x1] == 1).all() and item["image"].sum() == 3 * 6 * 10


def test_crop_drops_boxes_cut_to_nothing(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], [ann(1, 3, [2, 2, 6, 6]), ann(1, 7, [30, 2, 6, 6])])
    crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=20, y_max=20), *to_tensor()], bbox_params=bbox_params())
    target = CocoDetectionDataset(tmp_path / "images", json_path, transform=crop)[0]["target"]
    assert target["boxes"].tolist() == [[2.0, 2.0, 8.0, 8.0]] and target["labels"].tolist() == [1]


def test_clip_and_drop_policy_warns_with_counts(tmp_path: Path) -> None:
    annotations = [
        ann(1, 3, [-4, 2, 10, 6]),  # clipped to [0, 2, 6, 8]
        ann(1, 3, [35, 15, 10, 10]),  # clipped to [35, 15, 40, 20]
        ann(1, 3, [4, 2, 0, 6]),  # zero width
        ann(1, 3, [4, 2, 5, -1]),  # negative height
        ann(1, 3, [50, 2, 5, 5]),  # entirely outside
        ann(1, 3, [1, 1, 5, 5], iscrowd=1),
        ann(1, 7, [10, 10, 5, 5]),  # kept as is
    ]
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], annotations)
    with pytest.warns(UserWarning) as record:
        dataset = CocoDetectionDataset(tmp_path / "images", json_path)
    assert len(record) == 1
    assert str(record[0].message) == (
        f"'{json_path}': clipped 2 box(es) to the image, dropped 2 with non-positive width or height, "
        "dropped 1 lying entirely outside their image, skipped 1 iscrowd=1 annotation(s)."
    )
    target = dataset[0]["target"]
    assert target["boxes"].tolist() == [[0, 2, 6, 8], [35, 15, 40, 20], [10, 10, 15, 15]]
    assert target["labels"].tolist() == [1, 1, 2]


def test_missing_image_file(coco_root: Path) -> None:
    (coco_root / "val" / "images" / "c.jpg").unlink()
    dm = CocoDetectionDataModule(str(coco_root))
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed in '.*val/annotations\.json' .*e\.g\. c\.jpg"):
        dm.setup("validate")


def test_unknown_image_id(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], [ann(1, 3, [1, 1, 5, 5]), ann(42, 3, [1, 1, 5, 5])])
    with pytest.raises(ValueError, match=r"Annotation id 2 in '.*annotations\.json' refers to image id 42"):
        CocoDetectionDataset(tmp_path / "images", json_path)


def test_unknown_category_id(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], [ann(1, 99, [1, 1, 5, 5])])
    with pytest.raises(ValueError, match=r"Annotation id 1 in '.*annotations\.json' has category id 99.*\[1, 3, 7\]"):
        CocoDetectionDataset(tmp_path / "images", json_path)


def test_val_category_names_must_match_train(coco_root: Path) -> None:
    data = json.loads((coco_root / "val" / "annotations.json").read_text())
    data["categories"][0]["name"] = "wolf"
    (coco_root / "val" / "annotations.json").write_text(json.dumps(data))
    dm = CocoDetectionDataModule(str(coco_root))
    with pytest.raises(ValueError, match=r"names categories differently.*id 7: 'wolf' here, 'dog' there"):
        dm.setup("validate")


def test_image_size_differs_from_json(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path, [("a.png", 40, 20)], [])
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png' is 20x20 but '.*annotations\.json' says 40x20"):
        CocoDetectionDataset(tmp_path / "images", json_path)[0]


def test_missing_root_and_annotations(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere' does not exist"):
        CocoDetectionDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"No COCO annotation file found.*train/annotations\.json"):
        CocoDetectionDataModule(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train_annotations file '.*typo\.json' not found"):
        CocoDetectionDataModule(train_annotations=str(tmp_path / "typo.json"))


def test_explicit_paths_override_the_layout(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path / "elsewhere", [("a.png", 40, 20)], [ann(1, 1, [1, 1, 5, 5])])
    dm = CocoDetectionDataModule(
        train_images=str(tmp_path / "elsewhere" / "images"),
        train_annotations=str(json_path),
        image_size=40,
        scale_range=(1.0, 1.0),  # no random crop can cut the box away
    )
    assert dm.class_names == ["bird", "cat", "dog"]
    assert dm.dataset("train")[0]["target"]["labels"].tolist() == [0]
    with pytest.raises(ValueError, match=r"val split has no images folder.*val_images"):
        dm.setup("fit")


def test_read_categories_finds_them_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"categories": CATEGORIES, "images": [{"file_name": '"categories": [x]'}]}))
    assert read_categories(path) == {1: "bird", 3: "cat", 7: "dog"}
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match=r"a\.json' has no 'categories'"):
        read_categories(path)


def test_predict_folder(coco_root: Path) -> None:
    dm = CocoDetectionDataModule(str(coco_root), image_size=20, predict_dir=str(coco_root / "val" / "images"))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "path", "name", "orig_size", "valid_size"}
    assert batch["orig_size"] == [(20, 40), (30, 30), (24, 16)]
    assert batch["valid_size"] == [(10, 20), (20, 20), (20, 13)]
