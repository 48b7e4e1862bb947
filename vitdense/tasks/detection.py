"""DetectionTask: backbone + feature pyramid as the body of a torchvision RetinaNet, FCOS or Faster R-CNN."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal, TypedDict

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from vitdense.metrics import DetectionMAP
from vitdense.models.backbone import Backbone
from vitdense.models.necks import FPN, ExtraLevels, SimpleFeaturePyramid
from vitdense.tasks.base import BaseTask, group_indices
from vitdense.tasks.optim import merge_config


class DetectionHeadConfig(TypedDict, total=False):
    """Detector settings under ``model.init_args.head``.

    Keys: ``name`` (retinanet, fcos or faster_rcnn), ``channels`` (pyramid width), ``anchor_scale`` (anchor side /
    level stride; RetinaNet and Faster R-CNN), ``min_stride`` (finest pyramid level; null = 8 for the one-stage
    heads, P3-P7, and 4 for Faster R-CNN, P2-P6), ``score_thresh``, ``nms_thresh``, ``detections_per_img``.
    """

    name: Literal["retinanet", "fcos", "faster_rcnn"]
    channels: int
    anchor_scale: float
    min_stride: int | None
    score_thresh: float
    nms_thresh: float
    detections_per_img: int


HEAD_DEFAULTS: DetectionHeadConfig = {
    "name": "retinanet",
    "channels": 256,
    "anchor_scale": 4.0,
    "min_stride": None,
    "score_thresh": 0.05,
    "nms_thresh": 0.5,
    "detections_per_img": 100,
}


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detector transform without its resize: the DataModule sizes images; this normalises and pads."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target


class DetectionBody(nn.Module):
    """Backbone + pyramid as torchvision wants it: ``OrderedDict`` of equal-channel maps and ``out_channels``.

    Plain ViTs get ViTDet's simple feature pyramid from their last block; hierarchical backbones an FPN over the
    stages at ``min_stride`` and coarser. Only levels the detector reads are built, so every parameter gets a
    gradient (DDP needs that).

    Args:
        backbone: the backbone (a hierarchical one is narrowed to the stages at ``min_stride`` and coarser).
        channels: width of every pyramid level.
        min_stride: finest pyramid level.
        extra: coarser levels after stride 32: ``p6p7`` (RetinaNet, FCOS) or ``maxpool`` (Faster R-CNN's RPN).
    """

    def __init__(self, backbone: Backbone, channels: int, min_stride: int, extra: ExtraLevels) -> None:
        super().__init__()
        self.backbone = backbone
        if len(set(backbone.strides)) == 1:
            strides = tuple(s for s in (4, 8, 16, 32) if s >= min_stride)
            self.neck: nn.Module = SimpleFeaturePyramid(
                backbone.out_channels[-1], backbone.strides[-1], channels, strides, extra
            )
        else:
            keep = [i for i, s in enumerate(backbone.strides) if s >= min_stride]
            if not keep:
                raise ValueError(f"head.min_stride={min_stride} is coarser than every stage {backbone.strides}.")
            backbone.select_levels(keep)
            self.neck = FPN(backbone.out_channels, backbone.strides, channels, extra)
        self.strides = list(self.neck.strides)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), m) for i, m in enumerate(self.neck(self.backbone.features(x))))


def build_detector(name: str, backbone: Backbone, num_classes: int, cfg: dict) -> nn.Module:
    """A torchvision detector on the backbone's pyramid, with anchors matched to the pyramid strides.

    RetinaNet and FCOS read P3-P7 (P6/P7 by stride-2 convs, as in their papers); Faster R-CNN's RPN reads P2-P6 and
    its RoI heads pool from P2-P5, as in ViTDet and detectron2.
    """
    if name not in ("retinanet", "fcos", "faster_rcnn"):
        raise ValueError(f"Unknown detection head '{name}'; choose retinanet, fcos or faster_rcnn.")
    if name == "fcos" and cfg["channels"] % 32:
        raise ValueError(f"head.channels={cfg['channels']}: FCOS's head uses GroupNorm(32), so use a multiple of 32.")
    two_stage = name == "faster_rcnn"
    min_stride = cfg["min_stride"] if cfg["min_stride"] is not None else (4 if two_stage else 8)
    body = DetectionBody(backbone, cfg["channels"], min_stride, "maxpool" if two_stage else "p6p7")
    strides = body.strides
    common = {
        "min_size": 1,
        "max_size": 1,
        "image_mean": backbone.mean.flatten().tolist(),
        "image_std": backbone.std.flatten().tolist(),
        "detections_per_img": cfg["detections_per_img"],
    }
    scale = cfg["anchor_scale"]
    if name == "retinanet":
        sizes = tuple(tuple(int(scale * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
        model: nn.Module = RetinaNet(body, num_classes, anchor_generator=anchors, score_thresh=cfg["score_thresh"],
                                     nms_thresh=cfg["nms_thresh"], **common)  # fmt: skip
    elif name == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        model = FCOS(body, num_classes, anchor_generator=anchors, score_thresh=cfg["score_thresh"],
                     nms_thresh=cfg["nms_thresh"], **common)  # fmt: skip
    else:
        anchors = AnchorGenerator(tuple((int(2 * scale * s),) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
        names = [str(i) for i, s in enumerate(strides) if s <= 32]  # RoIs pool from P2-P5, not the max-pooled P6
        roi_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
        thresholds = {"box_score_thresh": cfg["score_thresh"], "box_nms_thresh": cfg["nms_thresh"]}
        model = FasterRCNN(body, num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                           **thresholds, **common)  # fmt: skip
    model.transform = _NoResizeTransform(1, 1, common["image_mean"], common["image_std"],
                                         size_divisible=backbone.size_divisor)  # fmt: skip
    return model


class DetectionTask(BaseTask):
    """Object detection with a pretrained ViT/DeiT/Swin/hybrid backbone and a torchvision detector.

    In eval mode ``task(images)`` takes a (B, 3, H, W) tensor or a list of (3, H, W) tensors in [0, 1] and returns
    one dict per image with ``boxes`` (xyxy, input pixels), ``scores`` and ``labels`` (0..num_classes-1).
    """

    monitor = "val/mAP"
    monitor_mode = "max"

    def __init__(self, num_classes: int = 1, head: DetectionHeadConfig | None = None, **kwargs: Any) -> None:
        """Build the model; every other argument is BaseTask's (backbone, optimizer, scheduler, ...).

        Args:
            num_classes: number of object classes, without background (linked from the DataModule in the CLI).
            head: detector settings (name: retinanet|fcos|faster_rcnn, channels, anchor_scale, min_stride,
                score_thresh, nms_thresh, detections_per_img).
        """
        super().__init__(num_classes=num_classes, **kwargs)

    def build_backbone(self) -> Backbone:
        backbone = Backbone(self.backbone_cfg)
        if self.backbone_cfg["out_indices"] is None and len(set(backbone.strides)) == 1:
            # ViTDet builds its pyramid from the last block alone.
            backbone.select_levels([-1])
        return backbone

    def configure_models(self) -> None:
        self.head_cfg = cfg = merge_config(self.hparams.head, dict(HEAD_DEFAULTS), "head")
        # The faster R-CNN labels are shifted by one for its background class.
        self.label_offset = 1 if cfg["name"] == "faster_rcnn" else 0
        self.detector = build_detector(cfg["name"], self.backbone, self.num_classes, cfg)

    def configure_metrics(self) -> DetectionMAP:
        return DetectionMAP(box_format="xyxy", iou_type="bbox")

    def compute_metrics(self, metric: DetectionMAP, stage: str) -> dict[str, torch.Tensor]:
        result = metric.compute()
        return {f"{stage}/mAP": result["map"], f"{stage}/mAP_50": result["map_50"], f"{stage}/mAP_75": result["map_75"]}

    def head_modules(self) -> list[nn.Module]:
        return [m for name, m in self.detector.named_children() if name != "backbone"] + [self.detector.backbone.neck]

    def example_input(self, size: tuple[int, int]) -> Any:
        return [[torch.zeros(3, *size)]]  # forward(images: list of tensors)

    def compile_targets(self) -> list[nn.Module]:
        # The detector's anchors, sampling and box decoding are Python over per-image lists: only the body compiles.
        return [self.backbone, self.detector.backbone.neck]

    def _targets(self, targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + self.label_offset} for t in targets]

    def _detections(self, outputs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [
            {"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.label_offset} for o in outputs
        ]

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image (eval mode): boxes (xyxy, input pixels), scores and labels.

        Images of different sizes run in separate groups: torchvision pads a batch to its largest image, and a ViT
        would attend to that padding, so an image's boxes would depend on its batch.
        """
        images = list(images)
        out: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for idx in group_indices(tuple(image.shape[-2:]) for image in images):
            for i, det in zip(idx, self._detections(self.detector([images[i] for i in idx])), strict=True):
                out[i] = det
        return out

    def _losses(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return sum(self.detector(images, self._targets(targets)).values())

    def shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images, targets = list(batch["image"]), batch["target"]
        if stage == "train":
            loss = self._losses(images, targets)
        else:
            # torchvision detectors return losses only in train mode: compute them with the body frozen in eval
            # (no BatchNorm statistics or drop-path change), per size group as the detections, then the
            # detections in eval mode.
            self.detector.train()
            self.detector.backbone.eval()
            loss = sum(
                self._losses([images[i] for i in idx], [targets[i] for i in idx]) * len(idx) / len(images)
                for idx in group_indices(tuple(image.shape[-2:]) for image in images)
            )
            self.detector.eval()
            preds = self(images)
            self.metrics[stage].update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        self.log_loss(stage, loss, len(images))
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Detections per image in its original pixels: ``[{"path", "boxes", "scores", "labels"}, ...]``."""
        out = []
        for det, path, (oh, ow), (vh, vw) in zip(
            self(batch["image"]), batch["path"], batch["orig_size"], batch["valid_size"], strict=True
        ):
            scale = torch.tensor([ow / vw, oh / vh, ow / vw, oh / vh], device=det["boxes"].device)
            out.append({"path": path, "boxes": (det["boxes"] * scale).cpu(), "scores": det["scores"].cpu(),
                        "labels": det["labels"].cpu()})  # fmt: skip
        return out

    def save_predictions(self, predictions: list[dict[str, Any]], output_dir: Path) -> list[Path]:
        """Append one JSON line per image to ``predictions.jsonl`` (boxes xyxy in original pixels)."""
        path = output_dir / "predictions.jsonl"
        with path.open("a") as f:
            for p in predictions:
                labels = p["labels"].tolist()
                f.write(json.dumps({
                    "path": p["path"],
                    "boxes": [[round(v, 2) for v in box] for box in p["boxes"].tolist()],
                    "scores": [round(v, 4) for v in p["scores"].tolist()],
                    "labels": labels,
                    "class_names": [self.class_names[k] for k in labels],
                }) + "\n")  # fmt: skip
        return [path] * len(predictions)
