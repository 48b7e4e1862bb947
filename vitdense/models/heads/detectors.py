"""Detectors on a ViT/Swin/hybrid body: the body (backbone + pyramid) and a name -> builder table of torchvision
RetinaNet, FCOS, Faster R-CNN and Mask R-CNN heads.

No detector returns a box of zero width or height. torchvision's two-stage RoI heads drop boxes with a side under
``MIN_BOX_SIZE`` (after clipping to the image, before NMS) with ``box_ops.remove_small_boxes``; its RetinaNet and FCOS
do not, and a box regressed past the image border is clipped flat there and kept (``[0, 0, 165, 0]``, score 0.66, on
a 128x192 mosaic). vitdense's RetinaNet and FCOS drop them as the RoI heads do, in the one post-processing that eager
inference, validation and the ONNX graph (traced from it) share.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, TypedDict

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from vitdense.models.backbone import Backbone
from vitdense.models.necks import FPN, ExtraLevels, SimpleFeaturePyramid


class DetectionHeadConfig(TypedDict, total=False):
    """Detector settings under ``model.init_args.head``.

    Keys: ``name`` (retinanet, fcos, faster_rcnn; mask_rcnn for instance segmentation), ``neck`` (auto,
    simple_fpn or fpn; auto = ViTDet's simple feature pyramid for plain ViTs, an FPN for hierarchical backbones),
    ``channels`` (pyramid width),
    ``anchor_scale`` (RetinaNet: its smallest anchor side / level stride; Faster and Mask R-CNN: half their anchor
    side / level stride, so the default 4 gives detectron2's 32-512 px on P2-P6; ``auto``: chosen from the training
    boxes when fitting, ``vitdense.data.recipe_rules.anchor_scale_rule``), ``min_stride`` (finest pyramid level;
    null = 8 for the one-stage heads, P3-P7, and 4 for Faster/Mask R-CNN, P2-P6), ``score_thresh``, ``nms_thresh``,
    ``detections_per_img``, ``roi_batch_size`` (RoIs sampled per image to train the two-stage box and mask heads;
    512 in detectron2 and ViTDet), ``box_head_width`` (the two-stage box head's two fully connected layers; 1024).
    """

    name: Literal["retinanet", "fcos", "faster_rcnn", "mask_rcnn"]
    neck: Literal["auto", "simple_fpn", "fpn"]
    channels: int
    anchor_scale: float | Literal["auto"]
    min_stride: int | None
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    roi_batch_size: int
    box_head_width: int


HEAD_DEFAULTS: DetectionHeadConfig = {
    "name": "retinanet",
    "neck": "auto",
    "channels": 256,
    "anchor_scale": 4.0,
    "min_stride": None,
    "score_thresh": 0.05,
    "nms_thresh": 0.5,
    "detections_per_img": 100,
    "roi_batch_size": 512,
    "box_head_width": 1024,
}


DETECTION_NECKS = ("auto", "simple_fpn", "fpn")
MIN_BOX_SIZE = 1e-2  # px: torchvision's RoIHeads.postprocess_detections drops boxes with a side under this


class _DropsEmptyBoxes:
    """One-stage post-processing (torchvision's RetinaNet/FCOS ``postprocess_detections``: per level the score
    threshold, the top ``topk_candidates``, decoding and clipping; per image the per-class NMS and
    ``detections_per_img``) that drops boxes with a side under ``MIN_BOX_SIZE`` after clipping, before NMS and the
    detection limit, so that they take no place among the detections."""

    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int

    def level_scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One image's (anchors, classes) scores at one level from its head outputs."""
        raise NotImplementedError

    def decode(self, regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (xyxy) from the regression of the given anchors."""
        raise NotImplementedError

    def postprocess_detections(
        self, head_outputs: dict[str, list[torch.Tensor]], anchors: list[list[torch.Tensor]],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:  # fmt: skip
        detections = []
        for index, (image_anchors, image_shape) in enumerate(zip(anchors, image_shapes, strict=True)):
            boxes, scores, labels = [], [], []
            for level, level_anchors in enumerate(image_anchors):
                outputs = {k: v[level][index] for k, v in head_outputs.items()}
                level_scores = self.level_scores(outputs)
                num_classes = level_scores.shape[-1]
                level_scores = level_scores.flatten()
                candidates = torch.where(level_scores > self.score_thresh)[0]
                top_scores, top = level_scores[candidates].topk(
                    det_utils._topk_min(candidates, self.topk_candidates, 0)
                )
                candidates = candidates[top]
                anchor_idxs = torch.div(candidates, num_classes, rounding_mode="floor")
                level_boxes = self.decode(outputs["bbox_regression"][anchor_idxs], level_anchors[anchor_idxs])
                level_boxes = box_ops.clip_boxes_to_image(level_boxes, image_shape)
                kept = box_ops.remove_small_boxes(level_boxes, MIN_BOX_SIZE)  # (the one line torchvision lacks)
                boxes.append(level_boxes[kept])
                scores.append(top_scores[kept])
                labels.append((candidates % num_classes)[kept])
            image_boxes, image_scores, image_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = box_ops.batched_nms(image_boxes, image_scores, image_labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]})
        return detections


class VitRetinaNet(_DropsEmptyBoxes, RetinaNet):
    """torchvision's RetinaNet, without boxes of zero width or height."""

    def level_scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(outputs["cls_logits"])

    def decode(self, regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.box_coder.decode_single(regression, anchors)


class VitFCOS(_DropsEmptyBoxes, FCOS):
    """torchvision's FCOS, without boxes of zero width or height."""

    def level_scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(outputs["cls_logits"]) * torch.sigmoid(outputs["bbox_ctrness"]))

    def decode(self, regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.box_coder.decode(regression, anchors)


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detector transform without its resize: the DataModule sizes images; this normalises and pads."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        return image, target


class DetectionBody(nn.Module):
    """Backbone + pyramid as torchvision wants it: ``OrderedDict`` of equal-channel maps and ``out_channels``.

    ``neck: simple_fpn`` is ViTDet's simple feature pyramid from the last map (the default for plain ViTs; the
    backbone is narrowed to its last block or stage unless the config names ``out_indices``); ``fpn`` an FPN over
    the stages at ``min_stride`` and coarser (the default for hierarchical backbones). Only levels the detector reads
    are built, so every parameter gets a gradient (DDP needs that).

    Args:
        backbone: the backbone, narrowed to the levels the neck reads.
        channels: width of every pyramid level.
        min_stride: finest pyramid level.
        extra: coarser levels after stride 32: ``p6p7`` (RetinaNet, FCOS) or ``maxpool`` (Faster R-CNN's RPN).
        neck: auto, simple_fpn or fpn.
    """

    def __init__(
        self, backbone: Backbone, channels: int, min_stride: int, extra: ExtraLevels, neck: str = "auto"
    ) -> None:
        super().__init__()
        self.backbone = backbone
        neck = detection_neck_name(neck, backbone)
        if neck == "simple_fpn":
            if backbone.cfg["out_indices"] is None or backbone.hierarchical:
                backbone.select_levels([-1])  # ViTDet builds its pyramid from the last block (or stage) alone
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


def detection_neck_name(neck: str, backbone: Backbone) -> str:
    """The neck a detector gets: ``auto`` resolved from the backbone, and a check that the choice can be built."""
    if neck not in DETECTION_NECKS:
        raise ValueError(f"Unknown detection neck '{neck}'; choose one of {', '.join(DETECTION_NECKS)}.")
    if neck == "auto":
        return "fpn" if backbone.hierarchical else "simple_fpn"
    if neck == "fpn" and not backbone.hierarchical:
        raise ValueError(
            f"head.neck=fpn needs stages at several strides, and '{backbone.cfg['name']}' is a plain ViT (one "
            "stride): use simple_fpn (ViTDet's pyramid from the last block) or auto."
        )
    return neck


def anchor_side(name: str, stride: int) -> float:
    """The side of the square anchor at ``anchor_scale`` 1 on the level of ``stride`` (RetinaNet: its smallest of
    three octave sizes; Faster and Mask R-CNN: their one size)."""
    return float(stride if name == "retinanet" else 2 * stride)


def anchor_generator(name: str, strides: list[int], scale: float) -> AnchorGenerator:
    """The anchors of the anchor-based heads at ``anchor_scale`` ``scale``: three aspect ratios per place, RetinaNet
    three octave sizes per level (``scale x stride x 2^(k/3)``), Faster/Mask R-CNN one (``2 x scale x stride``)."""
    if name == "retinanet":
        sizes = tuple(tuple(int(scale * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
    else:
        sizes = tuple((int(anchor_side(name, s) * scale),) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def set_anchor_scale(detector: nn.Module, name: str, strides: list[int], scale: float) -> None:
    """Give a built detector the anchors of another ``anchor_scale`` (anchors hold no weights: the heads are
    unchanged, each place keeps its number of anchors)."""
    anchors = anchor_generator(name, strides, scale)
    owner = detector if name == "retinanet" else detector.get_submodule("rpn")
    owner.anchor_generator = anchors


def _retinanet(body: DetectionBody, num_classes: int, cfg: dict, common: dict) -> nn.Module:
    anchors = anchor_generator("retinanet", body.strides, cfg["anchor_scale"])
    return VitRetinaNet(body, num_classes, anchor_generator=anchors, score_thresh=cfg["score_thresh"],
                        nms_thresh=cfg["nms_thresh"], **common)  # fmt: skip


def _fcos(body: DetectionBody, num_classes: int, cfg: dict, common: dict) -> nn.Module:
    if cfg["channels"] % 32:
        raise ValueError(f"head.channels={cfg['channels']}: FCOS's head uses GroupNorm(32), so use a multiple of 32.")
    strides = body.strides
    anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    return VitFCOS(body, num_classes, anchor_generator=anchors, score_thresh=cfg["score_thresh"],
                   nms_thresh=cfg["nms_thresh"], **common)  # fmt: skip


def _two_stage(body: DetectionBody, num_classes: int, cfg: dict) -> dict:
    """What Faster and Mask R-CNN share: anchors per level, RoI pooling from P2-P5 (not the max-pooled P6), the box
    head (two fully connected layers) and its predictor (``num_classes`` + background)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    strides, width = body.strides, cfg["box_head_width"]
    anchors = anchor_generator("faster_rcnn", strides, cfg["anchor_scale"])
    names = [str(i) for i, s in enumerate(strides) if s <= 32]
    return {
        "rpn_anchor_generator": anchors, "box_roi_pool": MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        "box_score_thresh": cfg["score_thresh"], "box_nms_thresh": cfg["nms_thresh"],
        "box_detections_per_img": cfg["detections_per_img"],  # (torchvision's two-stage name for it)
        "box_batch_size_per_image": cfg["roi_batch_size"],
        "box_head": TwoMLPHead(body.out_channels * 7 * 7, width),
        "box_predictor": FastRCNNPredictor(width, num_classes + 1),
    }  # fmt: skip


def _faster_rcnn(body: DetectionBody, num_classes: int, cfg: dict, common: dict) -> nn.Module:
    return FasterRCNN(body, None, **_two_stage(body, num_classes, cfg), **common)


def _mask_rcnn(body: DetectionBody, num_classes: int, cfg: dict, common: dict) -> nn.Module:
    """Mask R-CNN as in ViTDet: the Faster R-CNN above plus a 4-conv mask head on 14x14 RoIs from P2-P5, its width
    the pyramid's."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    two_stage = _two_stage(body, num_classes, cfg)
    names, width = two_stage["box_roi_pool"].featmap_names, body.out_channels
    return MaskRCNN(body, None, **two_stage, **common,
                    mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
                    mask_head=MaskRCNNHeads(width, [width] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(width, width, num_classes + 1))  # fmt: skip


# name -> (builder, finest default level, extra levels): RetinaNet and FCOS read P3-P7 (P6/P7 by stride-2 convs, as
# in their papers); Faster R-CNN's RPN reads P2-P6 and its RoI heads pool from P2-P5, as in ViTDet and detectron2.
DETECTORS: dict[str, tuple[Callable[..., nn.Module], int, ExtraLevels]] = {
    "retinanet": (_retinanet, 8, "p6p7"),
    "fcos": (_fcos, 8, "p6p7"),
    "faster_rcnn": (_faster_rcnn, 4, "maxpool"),
    "mask_rcnn": (_mask_rcnn, 4, "maxpool"),
}
INSTANCE_DETECTORS = ("mask_rcnn",)  # detectors that also predict masks (InstanceSegmentationTask)


def build_detector(name: str, backbone: Backbone, num_classes: int, cfg: dict) -> nn.Module:
    """A torchvision detector (``DETECTORS``) on the backbone's pyramid, with anchors matched to its strides."""
    if name not in DETECTORS:
        raise ValueError(f"Unknown detection head '{name}'; choose one of {', '.join(DETECTORS)}.")
    builder, default_min_stride, extra = DETECTORS[name]
    min_stride = cfg["min_stride"] if cfg["min_stride"] is not None else default_min_stride
    body = DetectionBody(backbone, cfg["channels"], min_stride, extra, cfg.get("neck", "auto"))
    mean, std = backbone.mean.flatten().tolist(), backbone.std.flatten().tolist()
    common = {"min_size": 1, "max_size": 1, "image_mean": mean, "image_std": std,
              "detections_per_img": cfg["detections_per_img"]}  # fmt: skip
    model = builder(body, num_classes, cfg, common)
    model.transform = _NoResizeTransform(1, 1, mean, std, size_divisible=backbone.size_divisor)
    return model
