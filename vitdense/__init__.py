"""vitdense: fine-tune pretrained Vision Transformers for classification, detection and segmentation.

The package by concern, lowest first; a module imports only from its own layer and those below, and nothing imports
in a circle (``tests/test_layers.py`` fails otherwise):

1. ``models`` (backbone, necks, heads, adapters, weights, layer decay, losses) and ``data`` (``formats/``: one reader
   per export format; ``datasets/``; ``datamodules/``; splits, transforms, report, the rules the data decides).
   Neither imports the other.
2. ``cost``: tokens, FLOPs and memory of a config.
3. ``tasks``: one LightningModule per task over ``BaseTask``, with its metrics, inference settings, prediction files
   and panels.
4. ``engine``: the LightningCLI, the one builder of a run from a config, and the one place a model for inference is
   rebuilt from a run (``engine.restore``).
5. ``inference`` (scenes), ``evaluation``, ``deploy`` (export, ONNX runner, serve) and ``tuning`` (lr / batch
   finders, sweeps): they use tasks and the engine, never each other's insides.
6. ``cli``: the command line.
"""

from vitdense import _moved
from vitdense.engine.restore import load
from vitdense.evaluation import EvaluationReport, evaluate
from vitdense.tasks import BaseTask, ClassificationTask, DetectionTask, InstanceSegmentationTask, SegmentationTask

_moved.install()

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
