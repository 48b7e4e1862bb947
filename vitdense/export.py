"""Exporting a trained task: safetensors (weights + resolved config, ``vitdense.load`` rebuilds the model without a
checkpoint or a Trainer) and ONNX (dynamic height and width; segmentation and classification also a dynamic batch;
detection in ``vitdense.export_detection``).
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import torch

from vitdense.models.weights import EXPORT_METADATA_KEY as CONFIG_KEY
from vitdense.tasks.base import BaseTask
from vitdense.tasks.detection import DetectionTask

# Training-only arguments left out of an exported model's config (an inference model has no optimizer).
TRAINING_ONLY = ("optimizer", "scheduler", "freeze_backbone", "unfreeze_at_epoch", "ema_decay", "grad_checkpointing",
                 "compile")  # fmt: skip


def inference_config(task: BaseTask) -> dict[str, Any]:
    """The task's constructor arguments for inference: no training options, backbone weights from the export itself
    (``pretrained: false``), adapters already merged."""
    args = {k: v for k, v in dict(task.hparams).items() if k not in TRAINING_ONLY and not k.startswith("_")}
    args["backbone"] = {**task.backbone_cfg, "pretrained": False, "peft": None}
    args.pop("pretrained", None)
    args["img_size"] = task.backbone_cfg["img_size"]
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


def load(path: str | Path, device: str | torch.device = "cpu") -> BaseTask:
    """A task exported with ``export_safetensors`` (or ``vitdense export --format safetensors``), in eval mode.

    Needs no checkpoint, config file or Trainer, and downloads nothing: ``task(images)`` predicts at once.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(CONFIG_KEY)
    if meta is None:
        raise ValueError(f"'{path}' holds no vitdense config; export it with `vitdense export --format safetensors`.")
    spec = json.loads(meta)
    module, _, name = spec["task"].rpartition(".")
    task = getattr(importlib.import_module(module), name)(**spec["init_args"])
    load_model(task, str(path), strict=True)  # raises on a missing or unexpected weight
    return task.to(device).eval()


def load_for_inference(
    model_file: str | Path | None,
    config: str | None = None,
    ckpt_path: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    error: Any = None,
) -> BaseTask:
    """A task in eval mode from an export (``model_file``) or from a config and its checkpoint (``overrides``: more
    ``--model.*``/``--data.*`` arguments); ``error(message)`` reports a missing argument (default: ValueError)."""
    if model_file is not None:
        return load(model_file)
    if not (config and ckpt_path):
        message = "give --model (an exported .safetensors), or --config with --ckpt_path"
        if error is not None:
            error(message)
        raise ValueError(message)
    from vitdense.runs import build

    task = build(config, [*overrides, "--trainer.logger", "false"]).model
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval()


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
