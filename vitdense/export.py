"""Exporting a trained task: safetensors (weights + resolved config, ``vitdense.load`` rebuilds the model without a
checkpoint or a Trainer) and ONNX (dynamic height and width; segmentation and classification also a dynamic batch;
detection in ``vitdense.export_detection``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from vitdense.models.weights import EXPORT_METADATA_KEY as CONFIG_KEY
from vitdense.restore import load, load_for_inference
from vitdense.tasks.base import BaseTask
from vitdense.tasks.detection import DetectionTask

__all__ = ["export_onnx", "export_safetensors", "inference_config", "load", "load_for_inference", "onnx_metadata"]

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

    path = _new_file(path, ".safetensors")
    task = inference_copy(task)
    meta = {"task": f"{type(task).__module__}.{type(task).__name__}", "init_args": inference_config(task)}
    # save_model stores a tensor that two modules share (a detector's body holds the backbone) once.
    save_model(task, str(path), metadata={CONFIG_KEY: json.dumps(meta)})
    return path


def inference_copy(task: BaseTask) -> BaseTask:
    """A CPU copy of ``task`` in eval mode with its LoRA adapters merged; the task itself is left as it was (an export
    from a notebook mid-training must not take the parameters its optimizer holds out of the model)."""
    copied = copy.deepcopy(task).cpu()
    copied.backbone.merge_adapters()
    return copied.eval()


def export_onnx(task: BaseTask, path: str | Path, opset: int = 18) -> Path:
    """Write an ONNX graph of ``task(images)`` for (N, 3, H, W) images in [0, 1] of any batch, height and width:
    logits (N, K, H, W) for segmentation (whole-image, no test-time augmentation), (N, K) for classification; for
    detection and instance segmentation, one (1, 3, H, W) image -> boxes, scores, labels (and masks).
    """
    path = _new_file(path, ".onnx")
    task = inference_copy(task)
    if isinstance(task, DetectionTask):  # one image -> boxes, scores, labels (and masks): vitdense.export_detection
        from vitdense.export_detection import export_detection_onnx

        return export_detection_onnx(task, path, opset)
    example = torch.rand(2, task.backbone.in_chans, *example_size(task))
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    torch.onnx.export(task, (example,), str(path), dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes=(dims,), opset_version=opset, verbose=False)  # fmt: skip
    from vitdense.onnx_runner import write_metadata

    write_metadata(path, onnx_metadata(task))
    return path


def onnx_metadata(task: BaseTask) -> dict[str, Any]:
    """What a runner needs besides the graph (``vitdense.onnx_runner``): task, classes, colours, input layout and
    bands, the normalisation inside the graph, the vitdense version."""
    from vitdense import __version__

    name = type(task).__name__.removesuffix("Task").lower()
    backbone = task.backbone
    return {
        "task": name,
        "class_names": list(task.class_names),
        "palette": task.palette()[: 3 * task.num_classes] if hasattr(task, "palette") else None,
        "in_chans": int(backbone.in_chans),
        "input": "images: float32 (N, in_chans, H, W), any N, H, W; 8-bit images scaled to [0, 1], other data as "
        "stored; the graph normalises with mean/std",
        "output": "logits (N, K, H, W)" if name == "segmentation" else "logits (N, K)",
        "mean": backbone.mean.flatten().tolist(),
        "std": backbone.std.flatten().tolist(),
        "img_size": task.backbone_cfg.get("img_size"),
        "backbone": task.backbone_cfg["name"],
        "vitdense_version": __version__,
    }


def example_size(task: BaseTask) -> tuple[int, int]:
    """The size the exporter traces at. Its graph holds for every size only if no size-dependent choice is made
    on the example: every pyramid level larger than 1 and than each adaptive pooling's output, height != width,
    and a token grid unlike the pos-embed's (so that the resampling is traced)."""
    pooled = [m.output_size for m in task.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    cells = max([8] + [max(s) if isinstance(s, tuple) else s for s in pooled if s is not None]) + 2
    coarsest = 2 * task.backbone.size_divisor  # a plain ViT's simple feature pyramid ends at twice the patch stride
    return (cells + 1) * coarsest, cells * coarsest


def _new_file(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if path.exists():
        raise FileExistsError(f"'{path}' exists; choose another --output (nothing was written).")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
