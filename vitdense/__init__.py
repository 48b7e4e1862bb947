"""vitdense: fine-tune pretrained Vision Transformers for classification, detection and segmentation."""

from vitdense.evaluation import EvaluationReport, evaluate
from vitdense.export import load
from vitdense.tasks import BaseTask, ClassificationTask, DetectionTask, InstanceSegmentationTask, SegmentationTask

__all__ = [
    "BaseTask",
    "ClassificationTask",
    "DetectionTask",
    "EvaluationReport",
    "InstanceSegmentationTask",
    "SegmentationTask",
    "evaluate",
    "load",
]
__version__ = "0.1.0"
