"""Exporting a trained task: safetensors (weights + resolved config, ``vitdense.load`` rebuilds the model without a
checkpoint or a Trainer) and ONNX (dynamic height and width; segmentation and classification also a dynamic batch;
detection in ``vitdense.deploy.export_detection``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vitdense.deploy.export_detection import export_detection_onnx
from vitdense.deploy.graph import example_size, inference_copy, new_file, onnx_metadata
from vitdense.deploy.onnx_runner import write_metadata
from vitdense.engine.restore import load, load_for_inference
from vitdense.models.weights import EXPORT_METADATA_KEY as CONFIG_KEY
from vitdense.tasks.base import BaseTask
from vitdense.tasks.detection import DetectionTask

__all__ = [
    "example_size",
    "export_onnx",
    "export_safetensors",
    "inference_config",
    "inference_copy",
    "load",
    "load_for_inference",
    "onnx_metadata",
]

# Training-only arguments left out of an exported model's config (an inference model has no optimizer).
TRAINING_ONLY = ("optimizer", "scheduler", "freeze_backbone", "unfreeze_at_epoch", "ema_decay", "grad_checkpointing",
                 "compile")  # fmt: skip


def inference_config(task: BaseTask) -> dict[str, Any]:
    """The task's constructor arguments for inference: no training options, backbone weights from the export itself
    (``pretrained: false``), adapters already merged; what the fit decided (band statistics in ``backbone.mean``/
    ``std``, class weights derived from the masks) as values."""
    args = {k: v for k, v in dict(task.hparams).items() if k not in TRAINING_ONLY and not k.startswith("_")}
    args["backbone"] = {**task.backbone_cfg, "pretrained": False, "peft": None}
    args.pop("pretrained", None)
    args["img_size"] = task.backbone_cfg["img_size"]
    loss = args.get("loss")
    if isinstance(loss, dict) and isinstance(loss.get("class_weights"), str):
        # A rule (median_frequency, auto, ...) was resolved from the training masks at fit: the export keeps the
        # weights it gave (the export has no masks to derive them from again).
        weights = getattr(task, "ce_class_weights", None)
        args["loss"] = {**loss, "class_weights": None if weights is None else weights.tolist()}
    return json.loads(json.dumps(args, default=list))


def export_safetensors(task: BaseTask, path: str | Path) -> Path:
    """Write the task's weights (LoRA adapters merged) and its inference config to a new ``.safetensors`` file."""
    from safetensors.torch import save_model

    path = new_file(path, ".safetensors")
    task = inference_copy(task)
    meta = {"task": f"{type(task).__module__}.{type(task).__name__}", "init_args": inference_config(task)}
    # save_model stores a tensor that two modules share (a detector's body holds the backbone) once.
    save_model(task, str(path), metadata={CONFIG_KEY: json.dumps(meta)})
    return path


def export_onnx(task: BaseTask, path: str | Path, opset: int = 18) -> Path:
    """Write an ONNX graph of ``task(images)`` for (N, 3, H, W) images in [0, 1] of any batch, height and width:
    logits (N, K, H, W) for segmentation (whole-image, no test-time augmentation), (N, K) for classification; for
    detection and instance segmentation, one (1, 3, H, W) image -> boxes, scores, labels (and masks).
    """
    path = new_file(path, ".onnx")
    task = inference_copy(task)
    if isinstance(
        task, DetectionTask
    ):  # one image -> boxes, scores, labels (and masks): vitdense.deploy.export_detection
        return export_detection_onnx(task, path, opset)
    example = torch.rand(2, task.backbone.in_chans, *example_size(task))
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    torch.onnx.export(task, (example,), str(path), dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes=(dims,), opset_version=opset, verbose=False)  # fmt: skip
    write_metadata(path, onnx_metadata(task))
    return path
