"""One folder, a reproducible split: seeded and stratified, list files read and written, no image in two splits."""

from pathlib import Path

import numpy as np
import pytest

from tests.data.label_fixtures import write_one_folder
from vitdense.data import SegmentationFolderDataModule
from vitdense.data.splits import stratified_split


def split_of(dm: SegmentationFolderDataModule) -> dict[str, list[str]]:
    return {name: [image.stem for image, _ in samples] for name, samples in dm.split_samples().items()}


def test_seeded_split_is_reproducible_disjoint_and_stratified(tmp_path: Path) -> None:
    stems = write_one_folder(tmp_path, n=12)
    dm = SegmentationFolderDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2, seed=3)
    split = split_of(dm)
    assert sorted(s for stems_ in split.values() for s in stems_) == stems  # every image once
    assert split == split_of(SegmentationFolderDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2, seed=3))
    val_classes = {
        c for s in split["val"] for c in np.unique(dm.dataset("val").load_mask(dm.root / "masks" / f"{s}.png"))
    }
    assert val_classes == {0, 1, 2, 3}  # the rare classes 2 (2 images) and 3 (2 images) reach val
    for rare in ({"img003", "img007"}, {"img005", "img009"}):
        assert rare & set(split["train"])  # and keep an image for training
    assert len(split["val"]) == len(split["test"]) == 2 and len(dm.dataset("train")) == 8
    assert any(split_of(SegmentationFolderDataModule(str(tmp_path), val_fraction=0.2, seed=s)) != split for s in (4, 5))


def test_stratification_reaches_every_class_with_two_images() -> None:
    rng = np.random.default_rng(0)
    presence = [set(rng.choice(30, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(60)]
    split = stratified_split([f"{i:02d}" for i in range(60)], presence, 0.1, 0.1, seed=0)
    in_val = {c for i in range(60) if f"{i:02d}" in split["val"] for c in presence[i]}
    counts = {c: sum(c in p for p in presence) for c in range(30)}
    assert {c for c, n in counts.items() if n >= 2} <= in_val
    assert not set(split["val"]) & set(split["train"]) and not set(split["test"]) & set(split["train"])


def test_split_lists_are_read_and_checked(tmp_path: Path) -> None:
    write_one_folder(tmp_path / "data", n=6)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("img000\nimg001.png\nimg002\nimg003\n")
    (lists / "val.txt").write_text("img004\nimg005\n")
    dm = SegmentationFolderDataModule(str(tmp_path / "data"), split_dir=str(lists))
    assert split_of(dm)["val"] == ["img004", "img005"] and len(dm.dataset("train")) == 4
    (lists / "val.txt").write_text("img004\nimg003\n")
    with pytest.raises(ValueError, match="'img003' is listed in both train and val"):
        SegmentationFolderDataModule(str(tmp_path / "data"), split_dir=str(lists)).split_samples()
    (lists / "val.txt").write_text("img004\nimg042\n")
    with pytest.raises(ValueError, match=r"val list .* not in the folder \(e.g. img042\)"):
        SegmentationFolderDataModule(str(tmp_path / "data"), split_dir=str(lists)).split_samples()


def test_too_few_images_to_split(tmp_path: Path) -> None:
    write_one_folder(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"2 image.* cannot be split into val 1 \+ test 1"):
        SegmentationFolderDataModule(str(tmp_path), test_fraction=0.2).split_samples()


def test_an_empty_split_of_one_folder_names_the_fraction_to_set(tmp_path: Path) -> None:
    """Segmentation and detection DataModules share the check (``SavedSplit.samples_of``)."""
    from tests.data.object_fixtures import labelme_folder
    from vitdense.data import CocoDetectionDataModule

    write_one_folder(tmp_path / "seg")
    labelme_folder(tmp_path / "det")
    expected = r"The test split of the one-folder dataset '.*' is empty; set data.init_args.test_fraction above 0"
    for dm in (SegmentationFolderDataModule(str(tmp_path / "seg")), CocoDetectionDataModule(str(tmp_path / "det"))):
        with pytest.raises(ValueError, match=expected):
            dm.setup("test")
