"""vitdense: fine-tune pretrained Vision Transformers for classification, detection and segmentation."""

from vitdense.tasks import BaseTask, ClassificationTask, DetectionTask, SegmentationTask

__all__ = ["BaseTask", "ClassificationTask", "DetectionTask", "SegmentationTask"]
__version__ = "0.1.0"
