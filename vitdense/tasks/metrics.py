"""Metrics that need more than torchmetrics gives: COCO mAP that syncs when processes hold different image counts,
and the segmentation scores of a confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torchmetrics.detection import MeanAveragePrecision


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


class DetectionMAP(MeanAveragePrecision):
    """torchmetrics' ``MeanAveragePrecision`` (COCO definitions) whose states sync in one gather per state.

    Its per-image list states are otherwise gathered with one collective per image, so processes holding different
    numbers of images (an uneven val split, counted once each) would call different collectives and hang.
    """

    def _sync_dist(self, dist_sync_fn: Callable | None = None, process_group: Any | None = None) -> None:
        group = process_group or self.process_group
        for attr in self._reductions:
            local = getattr(self, attr)
            gathered: list[Any] = [None] * dist.get_world_size(group)
            dist.all_gather_object(gathered, _to(local, torch.device("cpu")), group=group)
            setattr(self, attr, [_to(v, self.device) for part in gathered for v in part])  # every state is a list


def segmentation_scores(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """IoU, Dice and pixel accuracy from a (target x prediction) confusion matrix.

    Classes absent from both target and prediction get NaN and are left out of the means.
    """
    confmat = confmat.double()
    tp = confmat.diag()
    fp = confmat.sum(0) - tp
    fn = confmat.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(present, tp / union.clamp(min=1), nan)
    dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1), nan)
    total = confmat.sum()
    return {
        "mIoU": iou.nanmean(),
        "mDice": dice.nanmean(),
        "pixel_acc": tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64),
        "IoU": iou,
    }
