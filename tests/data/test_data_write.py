"""`vitdense data --write OUT`: the data as vitdense trains on it, in the plainest standard form: class-id palette PNGs
per split named by image stem with classes.txt (segmentation), COCO JSON per split (detection, instance); never into a
folder that holds anything."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.data.label_fixtures import NAMES, tree, write_color_splits
from tests.data.object_fixtures import cvat_scene
from vitdense.cli.entry import main
from vitdense.data import CocoInstanceDataModule, SegmentationFolderDataModule
from vitdense.data.formats.coco import decode_mask


def config(tmp_path: Path, data_class: str, **init_args) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"data": {"class_path": data_class, "init_args": init_args}}))
    return path


def test_write_gives_the_masks_the_training_dataset_reads(tmp_path: Path) -> None:
    """Colour masks through a class table with a void colour: the written ids are the training dataset's masks before
    augmentation (void 255), as palette PNGs named by image stem, with classes.txt in id order."""
    root = tmp_path / "data"
    expected = write_color_splits(root, per_split=2)
    cfg = config(tmp_path, "SegmentationFolderDataModule", root=str(root), crop_size=16)
    before, out = tree(root), tmp_path / "out"
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look"), "--write", str(out)])
    assert f"wrote train 2, val 2 masks to {out}" in text
    assert (out / "classes.txt").read_text().splitlines() == NAMES
    datamodule = SegmentationFolderDataModule(str(root), crop_size=16)
    for split in ("train", "val"):
        dataset = datamodule.dataset(split)
        written = sorted(p.name for p in (out / split / "masks").iterdir())
        assert written == sorted(f"{Path(image).stem}.png" for image, _ in dataset.samples)
        for index, (image_path, _) in enumerate(dataset.samples):
            png = Image.open(out / split / "masks" / f"{Path(image_path).stem}.png")
            assert png.mode == "P"
            ids = np.asarray(png)
            np.testing.assert_array_equal(ids, dataset.load_pair(index)[1])
            np.testing.assert_array_equal(ids, expected[Path(image_path).stem])
    assert tree(root) == before
    # a folder that holds anything is never written into, and is left as it was
    with pytest.raises(FileExistsError, match="is not an empty folder"):
        main(["data", "--config", str(cfg), "--output", str(tmp_path / "look"), "--write", str(out)])
    assert (out / "classes.txt").read_text().splitlines() == NAMES


def test_write_refuses_data_with_problems_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_color_splits(root, per_split=2)
    bad = np.asarray(Image.open(root / "val" / "masks" / "val1.png")).copy()
    bad[5, 5] = (7, 7, 7)  # a colour in no class entry: a fit would stop there
    Image.fromarray(bad).save(root / "val" / "masks" / "val1.png")
    cfg = config(tmp_path, "SegmentationFolderDataModule", root=str(root), crop_size=16)
    with pytest.raises(ValueError, match=r"nothing was written: the data has 1 problem\(s\)"):
        main(["data", "--config", str(cfg), "--output", str(tmp_path / "look"), "--write", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_write_instances_as_coco_round_trips(tmp_path: Path) -> None:
    """CVAT shapes (box, polygon, mask with a hole) -> COCO JSON with RLE masks -> read back by the COCO reader: the
    same images, boxes, labels, category names and masks."""
    root = tmp_path / "data"
    truth = {split: cvat_scene(root / split, f"{split}.png") for split in ("train", "val")}
    cfg = config(tmp_path, "CocoInstanceDataModule", root=str(root))
    out = tmp_path / "out"
    text = main(["data", "--config", str(cfg), "--write", str(out)])
    assert f"wrote {out}/<split>.json as COCO (train 1 images, 3 objects, val 1 images, 3 objects" in text
    back = CocoInstanceDataModule(train_images=str(root), train_annotations=str(out / "train.json"),
                                  val_images=str(root), val_annotations=str(out / "val.json"))  # fmt: skip
    assert back.class_names == ["car", "person"]
    for split in ("train", "val"):
        (record,) = back.dataset(split).records
        assert record.path == root / split / "images" / f"{split}.png"
        np.testing.assert_allclose(record.boxes, truth[split]["boxes"])
        assert record.labels.tolist() == truth[split]["labels"]
        masks = [decode_mask(s, record.height, record.width) for s in record.segmentations]
        for mask, expected in zip(masks, truth[split]["masks"], strict=True):
            np.testing.assert_array_equal(mask, expected)


def test_write_of_a_voc_export_as_it_is_gives_its_palette_indices(tmp_path: Path) -> None:
    """datumaro's VOC export (tests/fixtures/exports/voc: one labelled train image, no val.txt) as it is: the split it
    has is written, the ones it lacks are said, not a reason to write nothing. The mask is VOC's colour (0, 128, 0),
    bicycle, class 2 of VOC's colour map, on every pixel."""
    root = Path(__file__).parents[1] / "fixtures" / "exports" / "voc" / "voc_dataset1"
    cfg = config(tmp_path, "SegmentationFolderDataModule", root=str(root), crop_size=16)
    out = tmp_path / "out"
    text = main(["data", "--config", str(cfg), "--output", str(tmp_path / "look"), "--write", str(out)])
    assert f"wrote train 1 masks to {out}" in text and "not written: val" in text
    (written,) = (out / "train" / "masks").iterdir()
    ids = np.array(Image.open(written))
    rgb = np.array(Image.open(root / "SegmentationClass" / written.name).convert("RGB"))
    assert (rgb == (0, 128, 0)).all() and (ids == 2).all()
    assert (out / "classes.txt").read_text().splitlines()[2] == "bicycle"
