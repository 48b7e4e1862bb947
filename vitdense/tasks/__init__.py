"""LightningModules, one task per file over a shared BaseTask."""

from vitdense.tasks.base import BaseTask
from vitdense.tasks.classification import ClassificationTask
from vitdense.tasks.detection import DetectionTask
from vitdense.tasks.instance import InstanceSegmentationTask
from vitdense.tasks.segmentation import SegmentationTask

__all__ = ["BaseTask", "ClassificationTask", "DetectionTask", "InstanceSegmentationTask", "SegmentationTask"]
