"""DataModules, datasets, transforms and image I/O."""

import os

# Set before any module here imports albumentations, which otherwise asks PyPI for a newer version on every run (a
# warning offline that a user cannot act on).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from vitdense.data.base import BaseDataModule
from vitdense.data.benchmarks import (
    ADE20KDataModule,
    CityscapesDataModule,
    COCO2017DataModule,
    VOCSegmentationDataModule,
)
from vitdense.data.classification import ImageFolderDataModule, SyntheticClassificationDataModule
from vitdense.data.detection import CocoDetectionDataModule, SyntheticDetectionDataModule, detection_collate
from vitdense.data.io import image_size, load_image, load_mask
from vitdense.data.registry import get_datamodule, list_datamodules, register_datamodule
from vitdense.data.segmentation import SegmentationFolderDataModule, SyntheticSegmentationDataModule

__all__ = [
    "ADE20KDataModule",
    "BaseDataModule",
    "COCO2017DataModule",
    "CityscapesDataModule",
    "CocoDetectionDataModule",
    "ImageFolderDataModule",
    "SegmentationFolderDataModule",
    "SyntheticClassificationDataModule",
    "SyntheticDetectionDataModule",
    "SyntheticSegmentationDataModule",
    "VOCSegmentationDataModule",
    "detection_collate",
    "get_datamodule",
    "image_size",
    "list_datamodules",
    "load_image",
    "load_mask",
    "register_datamodule",
]
