"""ADE20K, Cityscapes, Pascal VOC and COCO 2017 DataModules on tiny fake copies of their official layouts."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.fake_data import FAKE_LAYOUTS, fake_mask, write_ade20k, write_cityscapes, write_coco2017, write_voc
from tests.tiny import PATCH8_VIT_D4
from vitdense.cli.entry import main
from vitdense.data.datamodules.benchmarks import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    VOC_CLASSES,
    ADE20KDataModule,
    CityscapesDataModule,
    VOCSegmentationDataModule,
)
from vitdense.data.registry import get_datamodule


def _loaded_and_raw(dm, split: str, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    item = dm.dataset(split)[index]
    _, mask_path = dm.dataset(split).samples[index]
    return item["mask"].numpy(), np.asarray(Image.open(mask_path)).astype(np.int64)


def test_registered_with_fixed_classes() -> None:
    for name, classes, n in (
        ("ADE20KDataModule", ADE20K_CLASSES, 150),
        ("CityscapesDataModule", CITYSCAPES_CLASSES, 19),
        ("VOCSegmentationDataModule", VOC_CLASSES, 21),
    ):
        dm = get_datamodule(name)(root="nowhere")  # nothing is read before setup
        assert dm.num_classes == n == len(set(classes)) and dm.class_names == list(classes)
        assert dm.ignore_index == 255
    assert ADE20K_CLASSES[:5] == ("wall", "building", "sky", "floor", "tree") and ADE20K_CLASSES[-1] == "flag"
    assert CITYSCAPES_CLASSES[13] == "car" and VOC_CLASSES[15] == "person"


@pytest.mark.parametrize("level", ["parent", "itself"])
def test_ade20k_reduces_zero_label(tmp_path: Path, level: str) -> None:
    root = write_ade20k(tmp_path)
    if level == "itself":
        root = root / "ADEChallengeData2016"
    (root / "classes.txt").write_text("ignored\n")  # the benchmark's names are fixed
    dm = ADE20KDataModule(str(root), crop_size=32, eval_size=None, batch_size=2)
    assert dm.num_classes == 150
    dm.setup("fit")
    assert len(dm.dataset("train")) == 3 and len(dm.dataset("val")) == 2
    loaded, raw = _loaded_and_raw(dm, "val")
    assert (loaded[raw == 0] == 255).all()
    assert np.array_equal(loaded[raw > 0], raw[raw > 0] - 1)
    assert set(np.unique(loaded).tolist()) == {0, 1, 74, 149, 255}
    dm.setup("test")
    assert [p for p, _ in dm.dataset("test").samples] == [p for p, _ in dm.dataset("val").samples]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.int64
    assert batch["mask"].max() <= 255 and set(batch["mask"].unique().tolist()) <= {0, 1, 74, 149, 255}


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    dm = CityscapesDataModule(str(write_cityscapes(tmp_path)), crop_size=16, batch_size=2)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 4 and len(dm.dataset("val")) == 3
    image_path, mask_path = dm.dataset("train").samples[0]
    assert image_path.name == "aachen_000000_000000_leftImg8bit.png"
    assert mask_path.name == "aachen_000000_000000_gtFine_labelIds.png"
    loaded, raw = _loaded_and_raw(dm, "val", 2)
    expected = {0: 255, 1: 255, 7: 0, 8: 1, 9: 255, 26: 13, 33: 18, 34: 255}  # road, sidewalk, car, bicycle; rest void
    for label_id, train_id in expected.items():
        assert (loaded[raw == label_id] == train_id).all(), label_id
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 64)  # full size, padded to a multiple of 32


def test_cityscapes_image_without_labels(tmp_path: Path) -> None:
    root = write_cityscapes(tmp_path)
    (root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000001_gtFine_labelIds.png").unlink()
    dm = CityscapesDataModule(str(root))
    with pytest.raises(FileNotFoundError, match=r"frankfurt/frankfurt_000000_000001_gtFine_labelIds\.png' not found"):
        dm.setup("validate")


def test_voc_palette_masks_and_root_levels(tmp_path: Path) -> None:
    write_voc(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        dm = VOCSegmentationDataModule(str(root), crop_size=16, batch_size=2)
        dm.setup("fit")
        assert len(dm.dataset("train")) == 3 and len(dm.dataset("val")) == 2
    assert Image.open(dm.dataset("val").samples[0][1]).mode == "P"
    loaded, raw = _loaded_and_raw(dm, "val")
    assert np.array_equal(loaded, raw)  # palette indices, not colours
    assert set(np.unique(loaded).tolist()) == {0, 1, 15, 20, 255}


def test_voc_train_list_option(tmp_path: Path) -> None:
    voc = write_voc(tmp_path) / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "trainaug.txt").write_text("2007_000032\n2009_000001\n")
    dm = VOCSegmentationDataModule(str(tmp_path), train_list="trainaug")
    assert len(dm.dataset("train")) == 2
    with pytest.raises(FileNotFoundError, match=r"nope\.txt' not found .*train\.txt.*trainaug\.txt"):
        VOCSegmentationDataModule(str(tmp_path), train_list="nope").dataset("train")


def test_missing_layouts_name_the_folder_and_the_official_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images/training' not found.*ADEChallengeData2016/images"):
        ADE20KDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train' not found.*_gtFine_labelIds\.png"):
        CityscapesDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"Pascal VOC 2012 not found.*VOCdevkit/VOC2012/JPEGImages"):
        VOCSegmentationDataModule(str(tmp_path)).setup("fit")
    voc = write_voc(tmp_path / "v") / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass" / "2009_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 file\(s\) listed by .*val\.txt.*2009_000001\.png"):
        VOCSegmentationDataModule(str(tmp_path / "v")).setup("validate")


def test_unknown_ids_are_reported(tmp_path: Path) -> None:
    root = write_ade20k(tmp_path)
    fake_mask(root / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_valid_00000000.png", [0, 200])
    dm = ADE20KDataModule(str(root))
    with pytest.raises(ValueError, match=r"ADE_valid_00000000\.png' has values \[199\] outside \[0, num_classes=150\)"):
        dm.dataset("val")[0]


@pytest.mark.parametrize("name", sorted(FAKE_LAYOUTS))
def test_cli_fast_dev_run(tmp_path: Path, name: str) -> None:
    """The real CLI links the benchmark's classes and ignore_index into the task and trains a step."""
    backbone = PATCH8_VIT_D4
    data = {"root": str(FAKE_LAYOUTS[name](tmp_path / "data")), "crop_size": 32, "batch_size": 2}
    # ADE20K's default resizes val images to a 512 short side (~5,400 tokens at patch 8): the same resize, to 64
    if name == "ADE20KDataModule":
        data["eval_size"] = 64
    cfg = {
        "model": {
            "class_path": "vitdense.SegmentationTask",
            "init_args": {"backbone": backbone, "head": {"channels": 16, "aux_channels": 8}},
        },
        "data": {"class_path": f"vitdense.data.datamodules.benchmarks.{name}", "init_args": data},
        "trainer": {"accelerator": "cpu", "precision": "32", "fast_dev_run": True, "enable_progress_bar": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(tmp_path / "c.yaml"), "--trainer.default_root_dir", str(tmp_path)])
    dm = cli.datamodule
    assert cli.model.num_classes == dm.num_classes and cli.model.class_names == dm.class_names
    assert cli.model.ignore_index == 255
    assert "val/mIoU" in cli.trainer.callback_metrics


def test_coco2017_official_layout(tmp_path: Path) -> None:
    from vitdense.data import COCO2017DataModule

    dm = COCO2017DataModule(str(write_coco2017(tmp_path / "coco")), image_size=32)
    assert dm.num_classes == 2 and dm.class_names == ["person", "dog"]
    dm.setup("test")
    item = dm.dataset("test")[0]
    assert item["target"]["labels"].tolist() == [1]  # category 18 -> label 1


def test_coco2017_missing_annotations_folder(tmp_path: Path) -> None:
    from vitdense.data import COCO2017DataModule

    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotations.*instances_"):
        COCO2017DataModule(str(tmp_path))
