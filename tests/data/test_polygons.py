"""Polygon annotations read directly (COCO, LabelMe, CVAT XML): masks equal hand-made ones pixel for pixel, with
overlaps, crowd / ignore regions and holes."""

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from tests.data.label_fixtures import image, write_json
from vitdense.data import SegmentationFolderDataModule

W, H = 20, 12
CLASSES = [{"name": "background"}, {"name": "road"}, {"name": "car"}]


def masks(dm: SegmentationFolderDataModule, split: str = "train") -> dict[str, np.ndarray]:
    ds = dm.dataset(split)
    return {img.stem: ds.load_mask(key) for img, key in ds.samples}


def expected_scene(crowd: bool = True) -> np.ndarray:
    """Road over the top 8 rows, a car on it, a car with a hole below, a crowd (ignored) region."""
    mask = np.zeros((H, W), np.int64)
    mask[0:8] = 1
    mask[2:6, 4:10] = 2
    mask[8:12, 0:6] = 2
    mask[9:11, 2:4] = 0  # the hole
    if crowd:
        mask[9:11, 14:18] = 255
    return mask


def holed_car() -> np.ndarray:
    region = np.zeros((H, W), np.uint8)
    region[8:12, 0:6] = 1
    region[9:11, 2:4] = 0
    return region


def rle(region: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [H, W], "counts": encoded["counts"].decode("ascii")}


def coco(tmp_path: Path, split: str = "train") -> dict:
    image(tmp_path / split / "images" / "scene.png", 0, (W, H))
    crowd = np.zeros((H, W), np.uint8)
    crowd[9:11, 14:18] = 1
    anns = [  # the small car first in the file: the area rule, not the order, puts it on top
        {"id": 1, "image_id": 5, "category_id": 9, "segmentation": [[4, 2, 10, 2, 10, 6, 4, 6]], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 7, "segmentation": [[0, 0, 20, 0, 20, 8, 0, 8]], "iscrowd": 0},
        {"id": 3, "image_id": 5, "category_id": 9, "segmentation": rle(holed_car()), "iscrowd": 0},
        {"id": 4, "image_id": 5, "category_id": 7, "segmentation": rle(crowd), "iscrowd": 1},
    ]
    data = {"images": [{"id": 5, "file_name": "scene.png", "width": W, "height": H}], "annotations": anns,
            "categories": [{"id": 7, "name": "road"}, {"id": 9, "name": "car"}]}  # fmt: skip
    write_json(tmp_path / split / "annotations.json", data)
    return data


def test_coco_polygons_rle_crowd_and_area_order(tmp_path: Path) -> None:
    for split in ("train", "val"):
        coco(tmp_path, split)
    dm = SegmentationFolderDataModule(str(tmp_path), classes=CLASSES)
    np.testing.assert_array_equal(masks(dm)["scene"], expected_scene())
    native = SegmentationFolderDataModule(str(tmp_path))  # classes from the categories: no background -> ignored
    assert native.class_names == ["road", "car"]
    expected = expected_scene() - 1
    expected[expected < 0] = 255
    expected[expected == 254] = 255
    np.testing.assert_array_equal(masks(native, "val")["scene"], expected)


def test_coco_categories_by_id(tmp_path: Path) -> None:
    data = coco(tmp_path)
    data["categories"] = [{"id": 1, "name": "r"}, {"id": 2, "name": "c"}]
    for ann, cid in zip(data["annotations"], (2, 1, 2, 1)):
        ann["category_id"] = cid
    write_json(tmp_path / "train" / "annotations.json", data)
    dm = SegmentationFolderDataModule(str(tmp_path), classes=CLASSES, polygons={"category_match": "id"})
    np.testing.assert_array_equal(masks(dm)["scene"], expected_scene())


def test_labelme_shapes_in_file_order(tmp_path: Path) -> None:
    image(tmp_path / "train" / "images" / "scene.jpg", 0, (W, H))
    shapes = [
        {"label": "road", "shape_type": "polygon", "points": [[0, 0], [19, 0], [19, 7], [0, 7]]},
        {"label": "car", "shape_type": "rectangle", "points": [[9, 5], [4, 2]]},
        {"label": "background", "shape_type": "polygon", "points": [[6, 3], [7, 3], [7, 4], [6, 4]]},  # a hole
        {"label": "car", "shape_type": "circle", "points": [[15, 10], [17, 10]]},
        {"label": "road", "shape_type": "line", "points": [[0, 10], [5, 10]]},
        {"label": "__ignore__", "shape_type": "rectangle", "points": [[12, 0], [13, 1]]},
    ]
    write_json(tmp_path / "train" / "annotations" / "scene.json",
               {"shapes": shapes, "imagePath": "../images/scene.jpg", "imageWidth": W, "imageHeight": H})  # fmt: skip
    dm = SegmentationFolderDataModule(str(tmp_path), classes=CLASSES, polygons={"line_width": 3})
    expected = np.zeros((H, W), np.int64)
    expected[0:8] = 1
    expected[2:6, 4:10] = 2
    expected[3:5, 6:8] = 0
    expected[8, 14:17] = 2
    expected[9:12, 13:18] = 2
    expected[9:12, 0:6] = 1
    expected[0:2, 12:14] = 255
    np.testing.assert_array_equal(masks(dm)["scene"], expected)


def cvat_rle(region: np.ndarray) -> str:
    flat = region.reshape(-1)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return ", ".join(str(r) for r in ([0, *runs] if flat[0] else runs))


CVAT_LABELS = "".join(f"<label><name>{n}</name><color>{c}</color></label>"
                      for n, c in (("background", "#000000"), ("road", "#804080"), ("car", "#400080")))  # fmt: skip


def cvat_xml(shapes: str, name: str = "scene.png") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><labels>'
            f'{CVAT_LABELS}</labels></task></meta><image id="0" name="{name}" width="{W}" height="{H}">{shapes}'
            "</image></annotations>")  # fmt: skip


def test_cvat_polygon_box_mask_by_z_order(tmp_path: Path) -> None:
    image(tmp_path / "images" / "scene.png", 0, (W, H))
    local = holed_car()[8:12, 0:6]
    shapes = (
        '<box label="car" xtl="4" ytl="2" xbr="10" ybr="6" z_order="1"></box>'  # first in the file, on top by z
        '<polygon label="road" points="0,0;20,0;20,8;0,8" z_order="0"></polygon>'
        f'<mask label="car" rle="{cvat_rle(local)}" left="0" top="8" width="6" height="4" z_order="0"></mask>'
        '<tag label="road"></tag>'
    )
    (tmp_path / "annotations.xml").write_text(cvat_xml(shapes))
    dm = SegmentationFolderDataModule(str(tmp_path), val_fraction=0.0)
    assert dm.class_names == ["background", "road", "car"] and dm.class_colors[1] == (128, 64, 128)
    np.testing.assert_array_equal(masks(dm)["scene"], expected_scene(crowd=False))
