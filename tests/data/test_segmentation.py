"""Segmentation folders (images/ + masks/ per split): items, padded batches, class names, every data error named."""

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitdense.data import SegmentationFolderDataModule
from vitdense.data.datamodules.segmentation import SegmentationFolderDataset
from vitdense.data.transforms import segmentation_train_transform


def write_pair(root: Path, split: str, stem: str, size=(40, 30), num_classes: int = 3, ext: str = ".png") -> None:
    """Write a random RGB image and a class-id mask of ``size`` (w, h) under ``root/split``."""
    w, h = size
    rng = np.random.default_rng(zlib.crc32(stem.encode()))
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / "images" / f"{stem}{ext}")
    Image.fromarray(rng.integers(0, num_classes, (h, w), dtype=np.uint8)).save(root / split / "masks" / f"{stem}.png")


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        write_pair(tmp_path, split, "a", (40, 30))
        write_pair(tmp_path, split, "b", (50, 20), ext=".jpg")
        write_pair(tmp_path, split, "c", (33, 33))
    return tmp_path


def test_folder_items_and_padded_batches(dataset_root: Path) -> None:
    dm = SegmentationFolderDataModule(str(dataset_root), num_classes=3, crop_size=32, batch_size=3)
    dm.setup("fit")
    item = dm.dataset("val")[1]  # b.jpg, 50x20
    assert item["image"].shape == (3, 20, 50) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["mask"].shape == (20, 50) and item["mask"].dtype == torch.int64
    assert item["path"].endswith("b.jpg") and item["orig_size"] == (20, 50)

    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (3, 3, 64, 64) and batch["mask"].shape == (3, 64, 64)
    assert batch["mask"].dtype == torch.int64
    assert (batch["mask"][1, 20:] == 255).all() and (batch["mask"][1, :, 50:] == 255).all()
    assert (batch["image"][1, :, 20:] == 0).all()
    assert batch["mask"][1, :20, :50].max() < 3
    assert batch["orig_size"] == [(30, 40), (20, 50), (33, 33)]

    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (3, 3, 32, 32) and train["mask"].shape == (3, 32, 32)
    assert set(train["mask"].unique().tolist()) <= {0, 1, 2, 255}


def test_class_names_from_classes_txt(dataset_root: Path) -> None:
    (dataset_root / "classes.txt").write_text("sky\n\nroad\ncar\n")
    dm = SegmentationFolderDataModule(str(dataset_root))
    assert dm.num_classes == 3 and dm.class_names == ["sky", "road", "car"]
    with pytest.raises(ValueError, match=r"lists 3 classes but num_classes=4"):
        SegmentationFolderDataModule(str(dataset_root), num_classes=4)


def test_default_class_names_and_missing_num_classes(tmp_path: Path) -> None:
    dm = SegmentationFolderDataModule(str(tmp_path / "nowhere"), num_classes=2)
    assert dm.class_names == ["class_0", "class_1"]
    with pytest.raises(ValueError, match=r"num_classes is not set.*classes\.txt"):
        SegmentationFolderDataModule(str(tmp_path))


def test_missing_root(tmp_path: Path) -> None:
    dm = SegmentationFolderDataModule(str(tmp_path / "missing"), num_classes=3)
    with pytest.raises(FileNotFoundError, match=r"missing' does not exist.*images"):
        dm.setup("fit")


def test_missing_split_only_when_needed(dataset_root: Path) -> None:
    dm = SegmentationFolderDataModule(str(dataset_root), num_classes=3)
    dm.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"test' not found.*root/\{split\}/masks"):
        dm.setup("test")


def test_image_without_mask(dataset_root: Path) -> None:
    write_pair(dataset_root, "train", "lonely")
    (dataset_root / "train" / "masks" / "lonely.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no mask .*lonely\.png"):
        SegmentationFolderDataset(dataset_root, "train", num_classes=3)


def test_mask_without_image(dataset_root: Path) -> None:
    write_pair(dataset_root, "train", "orphan")
    (dataset_root / "train" / "images" / "orphan.png").unlink()
    with pytest.raises(ValueError, match=r"1 mask\(s\) .* have no image .*orphan\.png"):
        SegmentationFolderDataset(dataset_root, "train", num_classes=3)


def test_mask_size_mismatch(dataset_root: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(dataset_root / "train" / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"images/a\.png' is 40x30 but '.*masks/a\.png' is 10x10"):
        SegmentationFolderDataset(dataset_root, "train", num_classes=3)


def test_mask_values_out_of_range(dataset_root: Path) -> None:
    mask = np.zeros((30, 40), np.uint8)
    mask[0, :4] = [7, 3, 255, 200]
    Image.fromarray(mask).save(dataset_root / "train" / "masks" / "a.png")
    dataset = SegmentationFolderDataset(dataset_root, "train", num_classes=3, ignore_index=255)
    with pytest.raises(ValueError, match=r"masks/a\.png' has values \[3, 7, 200\].*num_classes=3.*ignore_index=255"):
        dataset[0]


def test_corrupt_image(dataset_root: Path) -> None:
    (dataset_root / "train" / "images" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"Cannot read image '.*images/a\.png'"):
        SegmentationFolderDataset(dataset_root, "train", num_classes=3)


def test_rgb_mask_rejected(dataset_root: Path) -> None:
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(dataset_root / "train" / "masks" / "a.png")
    dataset = SegmentationFolderDataset(dataset_root, "train", num_classes=3)
    with pytest.raises(ValueError, match=r"masks/a\.png' .*single-channel class-id PNGs"):
        dataset[0]


def test_predict_folder(dataset_root: Path) -> None:
    dm = SegmentationFolderDataModule(
        str(dataset_root), num_classes=3, eval_size=16, predict_dir=str(dataset_root / "val" / "images")
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert "mask" not in batch and batch["image"].shape == (3, 3, 32, 64)
    assert batch["valid_size"][1] == (16, 40) and batch["orig_size"][1] == (20, 50)


def test_numbered_classes_txt_drops_the_ignore_index_line(tmp_path: Path) -> None:
    """CamVid-style ``<id> <name>`` lines, with a line for the void id, give the names of the real classes."""
    (tmp_path / "classes.txt").write_text("0 Sky\n1 Road\n2 Car\n3 Unlabelled (void)\n")
    dm = SegmentationFolderDataModule(str(tmp_path), ignore_index=3)
    assert dm.num_classes == 3
    assert dm.class_names == ["Sky", "Road", "Car"]


def test_training_augmentation_follows_the_torch_seed(dataset_root: Path) -> None:
    """albumentations has its own generator: seed_everything must still give the same crops, flips and colours."""

    def first_item(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        dataset = SegmentationFolderDataset(dataset_root, "train", 3, transform=segmentation_train_transform(16, 255))
        return torch.cat([dataset[0]["image"].flatten(), dataset[1]["image"].flatten()])

    assert torch.equal(first_item(0), first_item(0))
    assert not torch.equal(first_item(0), first_item(1))


def test_median_frequency_class_weights_from_the_training_masks(tmp_path: Path) -> None:
    """SegNet's median-frequency balancing: f_c = pixels of c / pixels of the images holding c; w = median(f) / f."""
    from vitdense.tasks.segmentation import frequency_weights

    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
    masks = {"a": np.zeros((10, 10), np.uint8), "b": np.ones((10, 10), np.uint8)}
    masks["b"][:2, :5] = 2  # class 2: 10 pixels, only in image b
    masks["b"][9, 9] = 255  # void, never counted
    for stem, mask in masks.items():
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "train" / "images" / f"{stem}.png")
        Image.fromarray(mask).save(tmp_path / "train" / "masks" / f"{stem}.png")
    dm = SegmentationFolderDataModule(str(tmp_path), num_classes=4)
    pixels, image_pixels = dm.class_pixel_counts()
    assert pixels.tolist() == [100, 89, 10, 0] and image_pixels.tolist() == [100, 99, 99, 0]
    weights = frequency_weights(pixels, image_pixels)
    freq = np.array([1.0, 89 / 99, 10 / 99])
    np.testing.assert_allclose(weights.numpy(), [*(np.median(freq) / freq), 1.0], rtol=1e-6)
    sqrt = frequency_weights(pixels, image_pixels, sqrt=True)
    np.testing.assert_allclose(sqrt.numpy() ** 2, weights.numpy(), rtol=1e-6)


def test_pixel_counts_alone_skip_the_regions_and_one_read_serves_both(tmp_path: Path, monkeypatch) -> None:
    from vitdense.data import regions

    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
    for stem in ("a", "b"):
        mask = np.zeros((10, 10), np.uint8)
        mask[2:5, 2:5] = 1
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "train" / "images" / f"{stem}.png")
        Image.fromarray(mask).save(tmp_path / "train" / "masks" / f"{stem}.png")
    found, solid_object = [], regions.solid_object
    monkeypatch.setattr(regions, "solid_object", lambda region: found.append(1) or solid_object(region))
    dm = SegmentationFolderDataModule(str(tmp_path), num_classes=2)
    assert dm.class_pixel_counts()[0].tolist() == [182, 18] and not found  # no regions for class weights alone
    present, solid = dm.class_object_counts()
    assert present.tolist() == [2, 2] and solid.tolist() == [0, 2] and len(found) == 4  # background has a hole
    train = dm.dataset("train")
    monkeypatch.setattr(train, "load_mask", lambda key: pytest.fail("masks read again"))
    assert dm.class_pixel_counts()[0].tolist() == [182, 18] and dm.class_object_counts()[1].tolist() == [0, 2]


def test_a_missing_root_without_num_classes_names_the_root(tmp_path: Path) -> None:
    """The template leaves num_classes to the data: a root that does not exist is said as such, not as a class count."""
    with pytest.raises(FileNotFoundError, match=r"data\.root: the dataset root '.*nowhere' does not exist"):
        SegmentationFolderDataModule(str(tmp_path / "nowhere"))
