"""Module paths of earlier vitdense versions, kept importable: ``import vitdense.export`` (or a config's
``class_path: vitdense.data.segmentation.SegmentationFolderDataModule``) gives the module at its new path, with a
``DeprecationWarning`` naming that path. ``vitdense.cli``, ``vitdense.evaluation`` and ``vitdense.inference`` are
packages now and export what the modules of those names did."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "vitdense.batch_size": "vitdense.tuning.batch_size",
    "vitdense.commands": "vitdense.cli.commands",
    "vitdense.config": "vitdense.models.config",
    "vitdense.data.base": "vitdense.data.datamodules.base",
    "vitdense.data.benchmarks": "vitdense.data.datamodules.benchmarks",
    "vitdense.data.class_table": "vitdense.data.formats.class_table",
    "vitdense.data.coco": "vitdense.data.datamodules.coco",
    "vitdense.data.coco_format": "vitdense.data.formats.coco",
    "vitdense.data.detection_dataset": "vitdense.data.datasets.detection",
    "vitdense.data.folders": "vitdense.data.formats.folders",
    "vitdense.data.imagefolder": "vitdense.data.datamodules.imagefolder",
    "vitdense.data.io": "vitdense.data.formats.io",
    "vitdense.data.objects": "vitdense.data.formats.objects",
    "vitdense.data.polygons": "vitdense.data.formats.polygons",
    "vitdense.data.raster": "vitdense.data.formats.raster",
    "vitdense.data.raster_windows": "vitdense.data.datamodules.raster_windows",
    "vitdense.data.readers": "vitdense.data.formats.masks",
    "vitdense.data.segmentation": "vitdense.data.datamodules.segmentation",
    "vitdense.data.segmentation_dataset": "vitdense.data.datasets.segmentation",
    "vitdense.data.streaming": "vitdense.data.datamodules.streaming",
    "vitdense.data.synthetic": "vitdense.data.datasets.synthetic",
    "vitdense.data.synthetic_datamodules": "vitdense.data.datamodules.synthetic",
    "vitdense.device_memory": "vitdense.cost.device_memory",
    "vitdense.estimate": "vitdense.cost.estimate",
    "vitdense.export": "vitdense.deploy",
    "vitdense.export_detection": "vitdense.deploy.export_detection",
    "vitdense.lightning_cli": "vitdense.engine.lightning_cli",
    "vitdense.losses": "vitdense.models.losses",
    "vitdense.messages": "vitdense.engine.messages",
    "vitdense.metrics": "vitdense.tasks.metrics",
    "vitdense.onnx_runner": "vitdense.deploy.onnx_runner",
    "vitdense.panels": "vitdense.tasks.panels",
    "vitdense.predictions": "vitdense.tasks.predictions",
    "vitdense.recipe_rules": "vitdense.data.recipe_rules",
    "vitdense.restore": "vitdense.engine.restore",
    "vitdense.runs": "vitdense.engine",
    "vitdense.scenes": "vitdense.inference.scenes",
    "vitdense.serve": "vitdense.deploy.serve",
    "vitdense.summary": "vitdense.tasks.summary",
    "vitdense.sweep": "vitdense.tuning.sweep",
    "vitdense.tune": "vitdense.tuning.tune",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads the module that now lives at the new one (the same module object)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there.", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported at its new path."""


def install() -> None:
    """Let the old paths import (once per interpreter)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
