"""Detection and instance segmentation from LabelMe and CVAT: boxes and masks equal hand-made ones, bad shapes are
errors naming file and shape, and a one-folder dataset gets a seeded, stratified split kept with the run."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.label_fixtures import H, W, image, write_json
from tests.data.object_fixtures import NAMES, cvat_scene, cvat_xml, labelme_folder, labelme_scene
from vitdense.data import CocoDetectionDataModule, CocoInstanceDataModule
from vitdense.data.transforms import detection_eval_transform


def objects(dm: CocoDetectionDataModule, split: str = "val") -> dict:
    """The target of the split's first image, at the image's own size."""
    dataset = dm.dataset(split)
    dataset.transform = detection_eval_transform(None)
    return dataset[0]["target"]


def check(target: dict, expected: dict, masks: bool) -> None:
    np.testing.assert_array_equal(target["boxes"].numpy(), np.asarray(expected["boxes"], np.float32))
    assert target["labels"].tolist() == expected["labels"]
    if masks:
        assert target["masks"].shape == (len(expected["masks"]), H, W)
        for got, want in zip(target["masks"].numpy(), expected["masks"], strict=True):
            np.testing.assert_array_equal(got, want)
    else:
        assert "masks" not in target


@pytest.mark.parametrize("instance", [False, True])
def test_labelme_rectangles_polygons_and_circles(tmp_path: Path, instance: bool) -> None:
    expected = labelme_scene(tmp_path / "val")
    labelme_scene(tmp_path / "train")
    dm = (CocoInstanceDataModule if instance else CocoDetectionDataModule)(str(tmp_path))
    assert dm.class_names == ["car", "person"] and dm.num_classes == 2  # every label of the files, sorted
    with pytest.warns(UserWarning, match=r"clipped 1 box.*skipped 1 shape\(s\) of void labels"):
        target = objects(dm)
    check(target, expected, instance)


@pytest.mark.parametrize("instance", [False, True])
def test_cvat_boxes_polygons_and_masks(tmp_path: Path, instance: bool) -> None:
    expected = cvat_scene(tmp_path / "val")
    cvat_scene(tmp_path / "train")
    dm = (CocoInstanceDataModule if instance else CocoDetectionDataModule)(str(tmp_path), annotations="cvat")
    assert dm.class_names == ["car", "person"]  # CVAT's labels, in file order
    check(objects(dm), expected, instance)


def test_class_names_fix_the_label_order(tmp_path: Path) -> None:
    labelme_scene(tmp_path / "train")
    labelme_scene(tmp_path / "val")
    dm = CocoDetectionDataModule(str(tmp_path), class_names=["person", "car"], void_classes=["unused"])
    with pytest.warns(UserWarning):
        assert objects(dm)["labels"].tolist() == [1, 0, 1, 0]


def labelme_one(root: Path, shape: dict, stem: str = "a") -> None:
    image(root / "images" / f"{stem}.png", 0)
    write_json(root / "annotations" / f"{stem}.json", {"shapes": [shape], "imageWidth": W, "imageHeight": H})


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"label": "truck", "shape_type": "rectangle", "points": [[1, 1], [5, 5]]},
         r"a\.json' shape 0 \(rectangle 'truck'\) has the label 'truck', which is not a class"),
        ({"label": "car", "shape_type": "polygon", "points": [[1, 1], [5, 5], [9, 9]]},
         r"a\.json' shape 0 \(polygon 'car'\) is degenerate"),
        ({"label": "car", "shape_type": "rectangle", "points": [[3, 3], [3, 9]]},
         r"a\.json' shape 0 \(rectangle 'car'\) is degenerate \(zero size\)"),
        ({"label": "car", "shape_type": "polygon", "points": [[1, 1], [30, 1], [30, 9]]},
         r"a\.json' shape 0 \(polygon 'car'\) reaches x 1\.0\.\.30\.0.*outside its 24x16 image"),
    ],
)  # fmt: skip
def test_bad_labelme_shapes_name_file_and_shape(tmp_path: Path, shape: dict, message: str) -> None:
    labelme_one(tmp_path, shape)
    with pytest.raises(ValueError, match=message):
        CocoDetectionDataModule(str(tmp_path), class_names=["car"]).setup("fit")


def test_image_and_annotation_must_pair(tmp_path: Path) -> None:
    labelme_one(tmp_path / "a", {"label": "car", "shape_type": "rectangle", "points": [[1, 1], [5, 5]]})
    image(tmp_path / "a" / "images" / "lonely.png", 1)
    with pytest.raises(ValueError, match=r"1 image\(s\) in '.*images' have no .* in '.*annotations'.*lonely\.png"):
        CocoDetectionDataModule(str(tmp_path / "a")).setup("fit")
    (tmp_path / "a" / "images" / "lonely.png").unlink()
    write_json(tmp_path / "a" / "annotations" / "orphan.json", {"shapes": [], "imageWidth": W, "imageHeight": H})
    with pytest.raises(ValueError, match=r"1 .* in '.*annotations' have no image .*orphan\.json"):
        CocoDetectionDataModule(str(tmp_path / "a")).setup("fit")
    cvat_scene(tmp_path / "b")
    (tmp_path / "b" / "annotations.xml").write_text(cvat_xml({"scene.png": "", "gone.png": ""}))
    with pytest.raises(FileNotFoundError, match=r"annotations\.xml' image 'gone\.png' annotates the image 'gone"):
        CocoDetectionDataModule(str(tmp_path / "b")).setup("fit")
    cvat_scene(tmp_path / "c")
    image(tmp_path / "c" / "images" / "extra.png", 2)
    with pytest.raises(ValueError, match=r"1 image\(s\) in '.*images' have no entry in '.*annotations\.xml'.*extra"):
        CocoDetectionDataModule(str(tmp_path / "c")).setup("fit")


def test_cvat_unknown_label_names_the_shape(tmp_path: Path) -> None:
    cvat_scene(tmp_path)
    with pytest.raises(ValueError, match=r"image 'scene\.png' shape 1 \(polygon 'person'\) has the label 'person'"):
        CocoInstanceDataModule(str(tmp_path), class_names=["car"]).setup("fit")


def split_of(dm: CocoDetectionDataModule) -> dict[str, list[str]]:
    return {s: [p.stem for p, _ in v] for s, v in dm.split_samples().items()}


def test_one_folder_split_is_seeded_disjoint_stratified_and_restored(tmp_path: Path) -> None:
    stems = labelme_folder(tmp_path)
    dm = CocoDetectionDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert dm.class_names == ["bike", "car", "person"]
    split = split_of(dm)
    assert split == split_of(CocoDetectionDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2, seed=3))
    assert sorted(s for v in split.values() for s in v) == stems and [len(v) for v in split.values()] == [6, 2, 2]
    assert {"img003", "img007"} & set(split["val"])  # person is in 2 images: one of them in val
    others = [split_of(CocoDetectionDataModule(str(tmp_path), test_fraction=0.2, seed=s)) for s in range(4, 8)]
    assert any(other["test"] != split["test"] for other in others)
    # a checkpoint's split wins over the seed: test reads the saved test images
    restored = CocoDetectionDataModule(str(tmp_path), test_fraction=0.2, seed=9)
    restored.setup("test")
    restored.load_state_dict(dm.state_dict())
    assert dm.state_dict() == {"split": split}
    assert [r.path.stem for r in restored.dataset("test").records] == split["test"]


def test_one_folder_coco(tmp_path: Path) -> None:
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}
    for i in range(5):
        image(tmp_path / "images" / f"{i}.png", i)
        coco["images"].append({"id": i, "file_name": f"{i}.png", "width": W, "height": H})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0})
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    dm = CocoDetectionDataModule(str(tmp_path), val_fraction=0.4)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 3 and len(dm.dataset("val")) == 2
    image(tmp_path / "images" / "unlisted.png", 9)
    with pytest.raises(ValueError, match=r"1 image\(s\) in '.*images' have no entry in '.*annotations\.json'"):
        CocoDetectionDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(ValueError, match=r"is one folder .* do not apply"):
        CocoDetectionDataModule(str(tmp_path), val_annotations=str(tmp_path / "annotations.json"))


def test_a_split_without_annotations_fails_when_used(tmp_path: Path) -> None:
    labelme_scene(tmp_path / "train")
    image(tmp_path / "test" / "images" / "unlabelled.png", 1)  # a test folder without labels: fit needs no test
    dm = CocoDetectionDataModule(str(tmp_path), class_names=NAMES)
    with pytest.raises(FileNotFoundError, match=r"The val split's annotations '.*val/annotations\.json' do not exist"):
        dm.setup("fit")
    labelme_scene(tmp_path / "val")
    dm = CocoDetectionDataModule(str(tmp_path), class_names=NAMES)
    dm.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"The test split's annotations .* annotations\.xml \(CVAT"):
        dm.setup("test")
