"""vitdense: fine-tune pretrained Vision Transformers for classification, detection and segmentation."""

from vitdense.tasks import BaseTask, SegmentationTask

__all__ = ["BaseTask", "SegmentationTask"]
__version__ = "0.1.0"
