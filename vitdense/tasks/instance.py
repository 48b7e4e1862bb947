"""InstanceSegmentationTask: Mask R-CNN on the detection body (ViTDet's simple feature pyramid for plain ViTs, an FPN
for hierarchical backbones), scored with COCO box and mask AP."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vitdense.models.heads.detectors import INSTANCE_DETECTORS, DetectionHeadConfig
from vitdense.tasks.detection import DetectionTask
from vitdense.tasks.metrics import DetectionMAP


class InstanceSegmentationTask(DetectionTask):
    """Instance segmentation: boxes, classes and a mask per object, with a pretrained ViT/DeiT/Swin/hybrid backbone.

    Batches' targets hold ``boxes``, ``labels`` and ``masks`` ((N, H, W) 0/1). In eval mode ``task(images)`` returns
    one dict per image with ``boxes`` (xyxy, input pixels), ``scores``, ``labels`` and ``masks`` ((N, H, W) bool, the
    mask probabilities above ``mask_thresh``). Logs ``<stage>/mAP`` (box, COCO) and ``<stage>/mask_mAP``, with their
    ``_50`` and ``_75`` variants; checkpoints follow ``val/mask_mAP``.
    """

    monitor = "val/mask_mAP"
    predicts_masks = True
    default_head = "mask_rcnn"

    def __init__(
        self, num_classes: int = 1, head: DetectionHeadConfig | None = None, mask_thresh: float = 0.5, **kwargs: Any
    ) -> None:
        """Build the model; every other argument is BaseTask's (backbone, optimizer, scheduler, ...).

        Args:
            num_classes: number of object classes, without background (linked from the DataModule in the CLI).
            head: detector settings as for detection (name: mask_rcnn, neck, channels, anchor_scale, min_stride,
                score_thresh, nms_thresh, detections_per_img, roi_batch_size).
            mask_thresh: mask probability above which a pixel belongs to the object.
        """
        super().__init__(num_classes=num_classes, head=head, **kwargs)

    def configure_models(self) -> None:
        name = (self.hparams["head"] or {}).get("name", self.default_head)
        if name not in INSTANCE_DETECTORS:
            raise ValueError(
                f"InstanceSegmentationTask needs a detector that predicts masks ({', '.join(INSTANCE_DETECTORS)}), "
                f"not head.name={name!r}; for boxes only, use DetectionTask."
            )
        super().configure_models()
        if self.inference_cfg["mode"] != "whole" or self.inference_cfg["flip"]:
            raise ValueError(
                "inference: tiles and flips merge boxes only; instance masks need mode: whole, flip: false."
            )

    def configure_metrics(self) -> DetectionMAP:
        return DetectionMAP(box_format="xyxy", iou_type=("bbox", "segm"))

    def compute_metrics(self, metric: DetectionMAP, stage: str) -> dict[str, torch.Tensor]:
        result = metric.compute()
        out = {}
        for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
            for key in ("map", "map_50", "map_75"):
                out[f"{stage}/{prefix}mAP{key[3:]}"] = result[f"{iou_type}_{key}"]
        return out

    def _targets(self, targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{**own, "masks": t["masks"]} for own, t in zip(super()._targets(targets), targets, strict=True)]

    def _detections(self, outputs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        thresh = self.hparams["mask_thresh"]
        return [
            {"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.label_offset,
             "masks": o["masks"][:, 0] > thresh}
            for o in outputs
        ]  # fmt: skip

    def metric_targets(self, targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"].bool()} for t in targets]

    def to_original(
        self, det: dict[str, torch.Tensor], orig: tuple[int, int], valid: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Boxes as for detection, and masks resized to the original image (nearest)."""
        masks = det["masks"][:, None].float()
        if tuple(masks.shape[-2:]) != orig:
            masks = torch.nn.functional.interpolate(masks, size=orig, mode="nearest")
        return {**super().to_original(det, orig, valid), "masks": masks[:, 0].bool().cpu()}

    def prediction_line(self, pred: dict[str, Any]) -> dict[str, Any]:
        """Detection's line of ``predictions.jsonl`` plus each mask as COCO RLE (``{"size": [h, w], "counts": ...}``,
        pycocotools' encoding) at the original image's size."""
        from pycocotools import mask as mask_utils

        rles = [mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8))) for m in pred["masks"]]
        masks = [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]
        return {**super().prediction_line(pred), "masks": masks}
