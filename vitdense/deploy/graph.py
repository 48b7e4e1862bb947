"""The contract every exported graph keeps (segmentation, classification and the detectors alike): the inference copy
it is traced from, the size it is traced at (so that the graph holds at every size), the metadata a runner needs
beside it (``vitdense.deploy.onnx_runner``), and never overwriting a file. ``export`` and ``export_detection`` build on
it; neither imports the other's insides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from vitdense.tasks.base import BaseTask
from vitdense.tasks.inference import windows


def inference_copy(task: BaseTask) -> BaseTask:
    """A CPU copy of ``task`` in eval mode with its LoRA adapters merged; the task itself is left as it was (an export
    from a notebook mid-training must not take the parameters its optimizer holds out of the model)."""
    copied = copy.deepcopy(task).cpu()
    copied.backbone.merge_adapters()
    return copied.eval()


def onnx_metadata(task: BaseTask) -> dict[str, Any]:
    """What a runner needs besides the graph (``vitdense.deploy.onnx_runner``): task, classes, colours, input layout and
    bands, the normalisation inside the graph, the vitdense version."""
    from importlib.metadata import version

    name = type(task).__name__.removesuffix("Task").lower()
    backbone = task.backbone
    return {
        "task": name,
        "class_names": list(task.class_names),
        "palette": palette()[: 3 * task.num_classes] if (palette := getattr(task, "palette", None)) else None,
        "in_chans": int(backbone.in_chans),
        "input": "images: float32 (N, in_chans, H, W), any N, H, W; 8-bit images scaled to [0, 1], other data as "
        "stored; the graph normalises with mean/std",
        "output": "logits (N, K, H, W)" if name == "segmentation" else "logits (N, K)",
        "mean": backbone.mean.flatten().tolist(),
        "std": backbone.std.flatten().tolist(),
        "img_size": task.backbone_cfg.get("img_size"),
        "backbone": task.backbone_cfg["name"],
        "vitdense_version": version("vitdense"),
        **({"inference": segmentation_inference(task)} if name == "segmentation" else {}),
    }


def segmentation_inference(task: BaseTask) -> dict[str, Any]:
    """The segmentation task's inference settings with the window's crop and stride resolved (the graph is one
    forward; ``OnnxModel`` applies windows, flip, scales and keep_largest around it as the task's val, test and
    predict did)."""
    cfg: dict[str, Any] = getattr(task, "inference_cfg")  # noqa: B009  (segmentation tasks only)
    crop, stride = windows(cfg, task.input_size())
    return {"mode": cfg["mode"], "crop": list(crop), "stride": list(stride), "flip": bool(cfg["flip"]),
            "scales": [float(s) for s in cfg["scales"]], "keep_largest": getattr(task, "keep_largest")}  # noqa: B009  # fmt: skip


def example_size(task: BaseTask) -> tuple[int, int]:
    """The size the exporter traces at. Its graph holds for every size only if no size-dependent choice is made
    on the example: every pyramid level larger than 1 and than each adaptive pooling's output, height != width,
    and a token grid unlike the pos-embed's (so that the resampling is traced)."""
    pooled = [m.output_size for m in task.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    sides = [v for s in pooled for v in (s if isinstance(s, tuple) else (s,)) if v is not None]
    cells = max([8, *sides]) + 2
    coarsest = 2 * task.backbone.size_divisor  # a plain ViT's simple feature pyramid ends at twice the patch stride
    return (cells + 1) * coarsest, cells * coarsest


def new_file(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    if path.exists():
        raise FileExistsError(f"'{path}' exists; choose another --output (nothing was written).")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
