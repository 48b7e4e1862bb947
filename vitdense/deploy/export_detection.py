"""ONNX export of the detectors (RetinaNet, FCOS, Faster R-CNN) and of Mask R-CNN, post-processing inside the graph.

The graph takes one image, ``images`` (1, bands, H, W) in [0, 1] of any height and width, and returns what
``task(images)`` returns in eval mode: ``boxes`` (N, 4) xyxy in input pixels, ``scores`` (N,), ``labels`` (N,) int64
in 0..K-1 and, for Mask R-CNN, ``masks`` (N, H, W) mask probabilities (a pixel belongs to the object above
``mask_thresh``, stored in the metadata). N is computed by the graph: score threshold, dropping boxes of zero width
or height (``models.heads.detectors.MIN_BOX_SIZE``), per-class NMS and the detection limit run inside it
(onnxruntime's ``NonMaxSuppression``, ``TopK`` and ``RoiAlign``), traced from the detector's own post-processing.

torch.export cannot yet trace torchvision's detectors (data-dependent branches in ``batched_nms`` and the RoI heads;
pytorch/vision#9306), so these graphs come from the TorchScript exporter, whose tracing torchvision supports
(``torchvision._is_tracing()`` selects ONNX-friendly code for padding, anchors, top-k, NMS, box clipping and mask
pasting). Three things keep such a trace valid at every size, and the tests check each at sizes other than the
traced one: the detector transform does not resize (vitdense's DataModules size the images), so no size is frozen by
``min_size``/``max_size``; anchors and padding are computed from the traced shapes; and the example image is chosen
so that no size-dependent branch (the pos-embed resampling, padding) is skipped at the traced size.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdense.deploy.graph import example_size, onnx_metadata
from vitdense.deploy.onnx_runner import write_metadata
from vitdense.tasks.detection import DetectionTask

OUTPUTS = ("boxes", "scores", "labels")


class DetectionGraph(nn.Module):
    """The task's detector on one image as the ONNX graph computes it (whole image, no test-time augmentation).

    Args:
        task: a DetectionTask or InstanceSegmentationTask in eval mode.
    """

    def __init__(self, task: DetectionTask) -> None:
        super().__init__()
        self.detector = task.detector
        self.label_offset = task.label_offset  # the two-stage detectors count the background as class 0
        self.predicts_masks = task.predicts_masks

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (out,) = self.detector([images[0]])
        result = (out["boxes"], out["scores"], out["labels"] - self.label_offset)
        return (*result, out["masks"][:, 0]) if self.predicts_masks else result


def export_detection_onnx(task: DetectionTask, path: Path, opset: int = 18) -> Path:
    """Write ``task``'s detector (and mask head) as an ONNX graph to the new file ``path``, with its metadata.

    ``task`` is expected to be an inference copy (CPU, eval mode, adapters merged: ``graph.inference_copy``).
    """
    if task.inference_cfg["mode"] != "whole" or task.inference_cfg["flip"]:
        warnings.warn(
            f"inference {task.inference_cfg} is not in the ONNX graph: it detects on the whole image, unflipped.",
            stacklevel=2,
        )
    _register_symbolics(opset)
    graph = DetectionGraph(task).eval()
    outputs = [*OUTPUTS, "masks"] if task.predicts_masks else list(OUTPUTS)
    example = torch.rand(1, task.backbone.in_chans, *example_size(task))
    axes = {"images": {2: "height", 3: "width"}} | {name: {0: "detections"} for name in outputs}
    if task.predicts_masks:
        axes["masks"] |= {1: "height", 2: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        # torchvision's code for tracing makes some shapes constants where they are constant here (no resize)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(TorchScript-based ONNX export|copy construct from a tensor)")
        torch.onnx.export(graph, (example,), str(path), dynamo=False, input_names=["images"], output_names=outputs,
                          dynamic_axes=axes, opset_version=opset)  # fmt: skip
    write_metadata(path, {**onnx_metadata(task), **detection_metadata(task)})
    return path


def detection_metadata(task: DetectionTask) -> dict[str, Any]:
    """The detection entries of the ONNX metadata (added to ``export.onnx_metadata``'s): task kind, outputs, the
    detector and its thresholds, and a colour per class for drawing."""
    from vitdense.tasks.mask_files import class_palette

    cfg = task.head_cfg
    masks = task.predicts_masks
    meta = {
        "task": "instance_segmentation" if masks else "detection",
        "input": "images: float32 (1, in_chans, H, W), one image of any H, W; 8-bit images scaled to [0, 1], other "
        "data as stored; the graph normalises with mean/std",
        "output": "boxes (N, 4) float32 xyxy in input pixels, scores (N,) float32, labels (N,) int64 in 0..K-1"
        + (", masks (N, H, W) float32 mask probabilities (above mask_thresh: the object)" if masks else ""),
        "palette": class_palette(task.num_classes),
        "detector": cfg["name"],
        "score_thresh": cfg["score_thresh"],
        "nms_thresh": cfg["nms_thresh"],
        "detections_per_img": cfg["detections_per_img"],
    }
    if masks:
        meta["mask_thresh"] = float(task.hparams["mask_thresh"])
    return meta


def _register_symbolics(opset: int) -> None:
    """Teach the TorchScript exporter timm's pos-embed resampling (``F.interpolate(mode="bicubic",
    antialias=True)``), as the dynamo exporter writes it: ONNX Resize (opset 18) with antialias and Keys' a = -0.5."""
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx import symbolic_helper as helper

    def bicubic_aa(g: Any, image: Any, output_size: Any, *args: Any) -> Any:
        if args and helper._maybe_get_const(args[0], "b") is True:
            return helper._unimplemented("_upsample_bicubic2d_aa", "align_corners=True")
        leading = g.op("Slice", g.op("Shape", image), g.op("Constant", value_t=torch.tensor([0])),
                       g.op("Constant", value_t=torch.tensor([2])))  # fmt: skip
        sizes = g.op("Concat", leading, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7: int64
        empty = helper._optional_input_placeholder_tensor
        return g.op("Resize", image, empty(g), empty(g), sizes, mode_s="cubic", cubic_coeff_a_f=-0.5,
                    coordinate_transformation_mode_s="half_pixel", antialias_i=1, exclude_outside_i=1)  # fmt: skip

    if opset < 18:
        raise ValueError(f"Detection ONNX export needs opset >= 18 (antialiased Resize), got {opset}.")
    register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", bicubic_aa, opset)
