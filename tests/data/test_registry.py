"""The DataModule registry: every built-in DataModule is listed, sorted, and found by its class name."""

import pytest

from vitdense.data import (
    CocoDetectionDataModule,
    ImageFolderDataModule,
    SyntheticSegmentationDataModule,
    get_datamodule,
    list_datamodules,
)


def test_registry_lists_both_datamodules() -> None:
    names = list_datamodules()
    assert {"SegmentationFolderDataModule", "SyntheticSegmentationDataModule"} <= set(names)
    assert names == sorted(names)
    assert get_datamodule("SyntheticSegmentationDataModule") is SyntheticSegmentationDataModule
    with pytest.raises(KeyError, match="SegmentationFolderDataModule"):
        get_datamodule("Nope")


def test_registry_lists_classification_datamodules() -> None:
    assert {"ImageFolderDataModule", "SyntheticClassificationDataModule"} <= set(list_datamodules())
    assert get_datamodule("ImageFolderDataModule") is ImageFolderDataModule


def test_registry_lists_detection_datamodules() -> None:
    assert {"CocoDetectionDataModule", "SyntheticDetectionDataModule"} <= set(list_datamodules())
    assert get_datamodule("CocoDetectionDataModule") is CocoDetectionDataModule
