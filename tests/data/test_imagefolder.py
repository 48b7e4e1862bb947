"""ImageFolder classification data (root/split/<class>/image): items, batches, and every layout error named."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitdense.data import ImageFolderDataModule
from vitdense.data.datamodules.imagefolder import ImageFolderDataset


def write_image(path: Path, size=(40, 30), mode: str = "RGB", seed: int = 0) -> None:
    """Write a random image of ``size`` (w, h) in ``mode``."""
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """``train`` and ``val`` with classes ``cat`` and ``dog``; images of several sizes, one grayscale."""
    for split in ("train", "val"):
        write_image(tmp_path / split / "cat" / "a.png", (40, 30))
        write_image(tmp_path / split / "cat" / "b.jpg", (25, 50), seed=1)
        write_image(tmp_path / split / "dog" / "c.png", (64, 64), mode="L", seed=2)
        (tmp_path / split / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    return tmp_path


def test_folder_items_and_batches(folder_root: Path) -> None:
    dm = ImageFolderDataModule(str(folder_root), image_size=32, batch_size=3)
    assert dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    dm.setup("fit")
    val = dm.dataset("val")
    assert len(val) == 3 and [label for _, label in val.samples] == [0, 0, 1]
    item = val[1]  # b.jpg, 25x50: short side -> int(32 / 0.875) = 36, then a 32x32 centre crop
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["label"].dtype == torch.int64 and item["label"].shape == () and item["label"].item() == 0
    assert item["path"].endswith("cat/b.jpg")

    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].tolist() == [0, 0, 1]
    assert batch["label"].dtype == torch.int64 and len(batch["path"]) == 3
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (3, 3, 32, 32) and sorted(train["label"].tolist()) == [0, 0, 1]


def test_grayscale_image_loads_as_rgb(folder_root: Path) -> None:
    item = ImageFolderDataModule(str(folder_root), image_size=32).dataset("val")[2]
    assert item["image"].shape == (3, 32, 32)
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][1], item["image"][2])


def test_val_may_lack_a_class(folder_root: Path) -> None:
    for path in (folder_root / "val" / "cat").iterdir():
        path.unlink()
    (folder_root / "val" / "cat").rmdir()
    dataset = ImageFolderDataset(folder_root, "val", ["cat", "dog"])
    assert [label for _, label in dataset.samples] == [1]


def test_extra_class_folder_in_val(folder_root: Path) -> None:
    write_image(folder_root / "val" / "bird" / "x.png")
    dm = ImageFolderDataModule(str(folder_root))
    with pytest.raises(ValueError, match=r"val' has class folder\(s\) \['bird'\] that are not among the 2 classes"):
        dm.setup("fit")


def test_num_classes_must_match_folders(folder_root: Path) -> None:
    assert ImageFolderDataModule(str(folder_root), num_classes=2).num_classes == 2
    with pytest.raises(ValueError, match=r"num_classes=3 but '.*' has 2 class folders \(cat, dog\)"):
        ImageFolderDataModule(str(folder_root), num_classes=3)


def test_missing_root_and_split(tmp_path: Path, folder_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere' does not exist.*<class name>"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    dm = ImageFolderDataModule(str(folder_root))
    with pytest.raises(FileNotFoundError, match=r"test' not found \(folders in root: \['train', 'val'\]\)"):
        dm.setup("test")


def test_no_class_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "loose.png")
    with pytest.raises(ValueError, match=r"No class folders found in '.*train'"):
        ImageFolderDataModule(str(tmp_path))


def test_empty_class_folder(folder_root: Path) -> None:
    (folder_root / "train" / "empty").mkdir()
    dm = ImageFolderDataModule(str(folder_root))
    assert dm.class_names == ["cat", "dog", "empty"]
    with pytest.raises(ValueError, match=r"Class folder '.*train/empty' holds no images"):
        dm.setup("fit")


def test_unreadable_image(folder_root: Path) -> None:
    (folder_root / "val" / "dog" / "bad.png").write_bytes(b"not an image")
    dataset = ImageFolderDataset(folder_root, "val", ["cat", "dog"])
    with pytest.raises(ValueError, match=r"Cannot read image '.*dog/bad\.png'"):
        dataset[2]


def test_predict_folder(folder_root: Path) -> None:
    dm = ImageFolderDataModule(str(folder_root), image_size=32, predict_dir=str(folder_root / "val" / "cat"))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "path"} and batch["image"].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="predict_dir"):
        ImageFolderDataModule(str(folder_root)).setup("predict")
