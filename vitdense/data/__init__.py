"""DataModules, datasets, transforms and image I/O.

One module per concern: ``folders`` (listing and pairing the files of folder datasets), ``transforms`` (augmentation
presets and collate functions), ``synthetic`` (seeded generators and shape renderers) with
``synthetic_datamodules``, ``base``, ``io`` and ``registry``; and one per format: ``segmentation`` (images + masks),
``imagefolder`` (classification), ``coco`` (detection and instance DataModules over COCO JSON, read and checked by
``coco_format``, and LabelMe / CVAT shapes, made into the same records by ``objects``; items by ``detection_dataset``;
COCO 2017) and ``benchmarks`` (ADE20K, Cityscapes, VOC). Importing this package registers every DataModule.
"""

import os

# Set before any module here imports albumentations, which otherwise asks PyPI for a newer version on every run (a
# warning offline that a user cannot act on).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from vitdense.data.datamodules.base import BaseDataModule
from vitdense.data.datamodules.benchmarks import (
    ADE20KDataModule,
    CityscapesDataModule,
    VOCSegmentationDataModule,
)
from vitdense.data.datamodules.coco import (
    COCO2017DataModule,
    COCO2017InstanceDataModule,
    CocoDetectionDataModule,
    CocoInstanceDataModule,
)
from vitdense.data.datamodules.imagefolder import ImageFolderDataModule
from vitdense.data.datamodules.raster_windows import RasterSegmentationDataModule
from vitdense.data.datamodules.segmentation import SegmentationFolderDataModule
from vitdense.data.datamodules.streaming import StreamingSegmentationDataModule
from vitdense.data.datamodules.synthetic import (
    SyntheticClassificationDataModule,
    SyntheticDetectionDataModule,
    SyntheticInstanceDataModule,
    SyntheticSegmentationDataModule,
)
from vitdense.data.formats.io import image_size, load_image, load_mask
from vitdense.data.registry import get_datamodule, list_datamodules, register_datamodule
from vitdense.data.transforms import detection_collate

__all__ = [
    "ADE20KDataModule",
    "BaseDataModule",
    "COCO2017DataModule",
    "COCO2017InstanceDataModule",
    "CityscapesDataModule",
    "CocoDetectionDataModule",
    "CocoInstanceDataModule",
    "ImageFolderDataModule",
    "RasterSegmentationDataModule",
    "SegmentationFolderDataModule",
    "StreamingSegmentationDataModule",
    "SyntheticClassificationDataModule",
    "SyntheticDetectionDataModule",
    "SyntheticInstanceDataModule",
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
