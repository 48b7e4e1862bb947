"""``vitdense.evaluate``: score a checkpoint on a split and report per class and per image, for every task.

The notebooks and ``vitdense evaluate`` share it; no logic lives only in a notebook. The split is scored by
Lightning's own ``validate``/``test`` loop (the same numbers the run logged), and the task keeps one record per image
on the way, from which the per-class table, the confusion matrix and the per-image scores are built.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import numpy as np
import torch

from vitdense.tasks import ClassificationTask, DetectionTask, SegmentationTask
from vitdense.tasks.base import BaseTask


@dataclass
class EvaluationReport:
    """What ``evaluate`` found.

    Attributes:
        task: ``segmentation``, ``classification`` or ``detection``.
        split: the split scored (``val`` or ``test``).
        metrics: the metrics as logged by the task (e.g. ``val/mIoU``), over the whole split.
        per_class: one row per class: segmentation IoU, Dice and pixel counts; classification precision, recall, F1
            and support; detection AP, AP50, AP75 and box counts, and mask_AP, mask_AP50, mask_AP75 for instance
            segmentation (COCO definitions).
        per_image: one row per image of the split, in order (``index`` = position in the split): its path and its
            own score (``score``, higher is better: the image's mIoU, the probability of its true class, or its F1
            of boxes at IoU 0.5 and score >= 0.5), plus the task's detail.
        confusion: ``(K, K)`` counts, rows = ground truth, columns = prediction (pixels or images); ``None`` for
            detection.
        class_names: the classes, in label order.
        curves: detection only: per class, precision at 101 recall points at IoU 0.5 (``{name: (recall, precision)}``).
        records: the task's raw per-image records (detection boxes, classification probabilities, ...).
        model: the task that was scored (eval mode), and ``data`` its DataModule: ``example`` uses them.
    """

    task: str
    split: str
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    confusion: np.ndarray | None
    class_names: list[str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    model: BaseTask | None = field(default=None, repr=False)
    data: L.LightningDataModule | None = field(default=None, repr=False)

    def example(self, index: int) -> dict[str, Any]:
        """Image ``index`` of the split as the model saw it, with its ground truth and the model's prediction.

        Returns ``image`` (H, W, 3 float in [0, 1]) and, by task: ``truth`` / ``pred`` class-id masks at the mask's
        resolution (segmentation; void pixels of ``truth`` are ``ignore_index``), class names (classification), or
        ``truth`` / ``pred`` dicts of boxes (xyxy, in the shown image's pixels), labels and scores (detection).
        """
        if self.model is None or self.data is None:
            raise ValueError("This report holds no model; it was not made by vitdense.evaluate.")
        item = self.data.dataset(self.split)[index]  # type: ignore[attr-defined]
        record = self.records[index]
        image = item["image"]
        shown = image[:, : item["valid_size"][0], : item["valid_size"][1]] if "valid_size" in item else image
        out: dict[str, Any] = {"path": record["path"], "image": shown.permute(1, 2, 0).clamp(0, 1).numpy()}
        if self.task == "segmentation":
            mask = item["mask"]
            assert isinstance(self.model, SegmentationTask)  # task "segmentation" is read from the model's class
            with torch.no_grad():
                ((_, logits),) = self.model.logits_per_size(
                    image[None].to(self.model.device), [tuple(shown.shape[-2:])], [tuple(mask.shape[-2:])]
                )
            out |= {"truth": mask.numpy(), "pred": self.model.classes_of(logits)[0].cpu().numpy()}
        elif self.task == "classification":
            out |= {"truth": self.class_names[record["label"]], "pred": self.class_names[record["pred"]],
                    "confidence": float(record["probs"][record["pred"]])}  # fmt: skip
        else:
            out |= {"truth": {k: v.numpy() for k, v in record["target"].items()},
                    "pred": {k: v.numpy() for k, v in record["pred"].items()}}  # fmt: skip
        return out

    def worst(self, n: int = 5) -> list[dict[str, Any]]:
        """The ``n`` images with the lowest score (the ones to look at first)."""
        return sorted(self.per_image, key=lambda r: (r["score"], r["index"]))[:n]

    def threshold_table(self, thresholds: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)):
        """Detection: precision, recall and F1 of boxes at IoU 0.5 over the split, per score threshold (to pick the
        threshold a deployment keeps). Rows: ``{"threshold", "precision", "recall", "F1", "tp", "fp", "fn"}``."""
        if self.task != "detection":
            raise ValueError(f"threshold_table is for detection reports, not {self.task}.")
        rows = []
        for t in thresholds:
            tp, fp, fn = np.sum([match_boxes(r["pred"], r["target"], t) for r in self.records], axis=0)
            precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"threshold": t, "precision": float(precision), "recall": float(recall), "F1": float(f1),
                         "tp": int(tp), "fp": int(fp), "fn": int(fn)})  # fmt: skip
        return rows

    def table(self) -> str:
        """The per-class table as aligned text, metrics first."""
        lines = [f"{k} {v:.4f}" for k, v in self.metrics.items() if "/IoU/" not in k]
        keys = [k for k in self.per_class[0] if k != "class"] if self.per_class else []
        lines.append(f"{'class':<20}" + "".join(f"{k:>12}" for k in keys))
        for row in self.per_class:
            cells = "".join(f"{row[k]:>12.4f}" if isinstance(row[k], float) else f"{row[k]:>12}" for k in keys)
            lines.append(f"{str(row['class'])[:20]:<20}{cells}")
        return "\n".join(lines)

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``metrics.json``, ``per_class.csv`` and ``per_image.csv`` into a new or empty ``folder``.

        Raises:
            FileExistsError: ``folder`` already holds files (results are never overwritten).
        """
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"'{folder}' is not empty; choose another folder (nothing was written).")
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "metrics.json", folder / "per_class.csv", folder / "per_image.csv"]
        summary = {"task": self.task, "split": self.split, "metrics": self.metrics, "class_names": self.class_names}
        paths[0].write_text(json.dumps(summary, indent=1) + "\n")
        for path, rows in zip(paths[1:], (self.per_class, self.per_image), strict=True):
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["class"])
                writer.writeheader()
                writer.writerows(rows)
        return paths


class _ConfusionCatcher(L.Callback):
    """Keeps the task's confusion matrix of the split before the task resets it at the end of the epoch."""

    def __init__(self) -> None:
        self.confusion: np.ndarray | None = None

    def _catch(self, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(pl_module, SegmentationTask):
            self.confusion = pl_module.stage_metric(stage).compute().cpu().numpy()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch(pl_module, "test")


def evaluate(
    config: str | Path,
    checkpoint: str | Path | None = None,
    split: Literal["val", "test"] = "val",
    args: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> EvaluationReport:
    """Score ``checkpoint`` on a split of the data of ``config``, and report per class and per image.

    Args:
        config: the YAML the checkpoint was trained with (model and data), or its run folder's ``config.yaml``.
        checkpoint: a ``.ckpt`` of that run; ``None`` scores the model as the config builds it.
        split: ``val`` or ``test``.
        args: further CLI overrides, e.g. ``["--data.root", "other/data", "--model.inference.mode", "slide"]``.
        output_dir: write ``metrics.json``, ``per_class.csv`` and ``per_image.csv`` there (a new or empty folder).

    Runs on one device (the first GPU if there is one, else the CPU).
    """
    # The CLI's builder and the one restorer of a run; imported here so that `import vitdense` stays light.
    from vitdense.engine.builder import build
    from vitdense.engine.restore import restore

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}.")
    trainer_args = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false", "--trainer.devices", "1"]  # fmt: skip
    # A checkpoint's task as its fit left it (band statistics, class weights, ...; weights loaded), not as the
    # config alone builds it.
    built = restore(config, checkpoint, [*args, *trainer_args]) if checkpoint else build(config, [*args, *trainer_args])
    task, data = built.model, built.datamodule
    catcher = _ConfusionCatcher()
    trainer = L.Trainer(
        accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        precision=built.trainer.precision, callbacks=[catcher], enable_checkpointing=False,
    )  # fmt: skip
    task.eval_records = []
    try:
        run = trainer.validate if split == "val" else trainer.test
        logged = run(task, datamodule=data, verbose=False)
    finally:
        records, task.eval_records = task.eval_records, None
    metrics = {k: float(v) for k, v in (logged[0] if logged else {}).items()}
    names = list(task.class_names)
    if isinstance(task, SegmentationTask):
        report = _segmentation(records, names, catcher.confusion)
    elif isinstance(task, ClassificationTask):
        report = _classification(records, names)
    elif isinstance(task, DetectionTask):
        report = _detection(records, names)
    else:
        raise TypeError(f"evaluate does not know the task {type(task).__name__}.")
    task.eval()
    result = EvaluationReport(task=report.pop("task"), split=split, metrics=metrics, class_names=names,
                              records=records, model=task, data=data, **report)  # fmt: skip
    if output_dir is not None:
        result.save(output_dir)
    return result


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _segmentation(records: list[dict], names: list[str], confusion: np.ndarray | None) -> dict[str, Any]:
    tp, fp, fn = (np.sum([r[k] for r in records], axis=0) for k in ("tp", "fp", "fn"))
    iou, dice = _ratio(tp, tp + fp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    per_class = [
        {"class": n, "IoU": float(iou[k]), "Dice": float(dice[k]), "gt_pixels": int(tp[k] + fn[k]),
         "pred_pixels": int(tp[k] + fp[k])}
        for k, n in enumerate(names)
    ]  # fmt: skip
    per_image = []
    for r in records:
        image_iou = _ratio(r["tp"], r["tp"] + r["fp"] + r["fn"])
        pixels = r["tp"].sum() + r["fn"].sum()
        per_image.append({"index": r["index"], "path": r["path"], "score": float(np.nanmean(image_iou)),
                          "pixel_acc": float(r["tp"].sum() / max(pixels, 1))})  # fmt: skip
    return {"task": "segmentation", "per_class": per_class, "per_image": per_image, "confusion": confusion}


def _classification(records: list[dict], names: list[str]) -> dict[str, Any]:
    k = len(names)
    confusion = np.zeros((k, k), np.int64)
    for r in records:
        confusion[r["label"], r["pred"]] += 1
    tp = np.diag(confusion)
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    # torchmetrics' convention, which the logged val/f1 (macro) follows: 0/0 is 0 for a class that has images or
    # predictions (a class never predicted scores precision 0, F1 0), and a class with neither is left out (NaN).
    seen = tp + fp + fn > 0
    precision, recall = (np.where(seen, np.nan_to_num(_ratio(tp, d)), np.nan) for d in (tp + fp, tp + fn))
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    per_class = [
        {"class": n, "precision": float(precision[c]), "recall": float(recall[c]), "F1": float(f1[c]),
         "support": int(confusion[c].sum())}
        for c, n in enumerate(names)
    ]  # fmt: skip
    per_image = [
        {"index": r["index"], "path": r["path"], "score": float(r["probs"][r["label"]]), "label": names[r["label"]],
         "pred": names[r["pred"]], "confidence": float(r["probs"][r["pred"]])}
        for r in records
    ]  # fmt: skip
    return {"task": "classification", "per_class": per_class, "per_image": per_image, "confusion": confusion}


def match_boxes(
    pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], score_thresh: float, iou_thresh: float = 0.5
) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of one image's detections scoring >= ``score_thresh``:
    each ground-truth box matches at most one detection of its class with IoU >= ``iou_thresh``, highest score
    first (as COCO matches)."""
    from torchvision.ops import box_iou

    keep = pred["scores"] >= score_thresh
    boxes, labels, scores = pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep]
    boxes, labels = boxes[scores.argsort(descending=True)], labels[scores.argsort(descending=True)]
    matched: set[int] = set()
    if len(boxes) and len(target["boxes"]):
        iou = box_iou(boxes.float(), target["boxes"].float())
        iou[labels[:, None] != target["labels"][None, :]] = 0
        for i in range(len(boxes)):
            free = [j for j in range(iou.shape[1]) if j not in matched]
            if free:
                j = max(free, key=lambda j: float(iou[i, j]))
                if iou[i, j] >= iou_thresh:
                    matched.add(j)
    tp = len(matched)
    return tp, len(boxes) - tp, len(target["boxes"]) - tp


def _detection(records: list[dict], names: list[str], score_thresh: float = 0.5) -> dict[str, Any]:
    from torchmetrics.detection import MeanAveragePrecision

    def pr_table(iou_type: Literal["bbox", "segm"]) -> tuple[np.ndarray, list[int]]:
        """Precision (IoU thresholds .50:.05:.95, 101 recall points, classes; -1 = no GT) and the classes' ids."""
        metric = MeanAveragePrecision(box_format="xyxy", iou_type=iou_type, class_metrics=True, extended_summary=True)
        metric.update([r["pred"] for r in records], [r["target"] for r in records])
        out = metric.compute()  # precision: (..., area ranges, max detections): all areas, 100 detections
        return out["precision"][:, :, :, 0, -1].numpy(), [int(c) for c in out["classes"].reshape(-1).tolist()]

    def ap(precision: np.ndarray, t: slice | int, column: int) -> float:
        p = precision[t, :, column]
        return float(p[p > -1].mean()) if (p > -1).any() else float("nan")

    precision, present = pr_table("bbox")
    with_masks = bool(records) and "masks" in records[0]["pred"]  # instance segmentation: mask AP too
    mask_precision, mask_present = pr_table("segm") if with_masks else (None, [])

    gt = np.bincount(np.concatenate([r["target"]["labels"].numpy() for r in records] or [[]]).astype(int),
                     minlength=len(names))  # fmt: skip
    dets = np.bincount(np.concatenate([r["pred"]["labels"].numpy() for r in records] or [[]]).astype(int),
                       minlength=len(names))  # fmt: skip
    per_class, curves = [], {}
    recall_points = np.linspace(0, 1, 101)
    for c, n in enumerate(names):
        col = present.index(c) if c in present else None
        row = {"class": n, "AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
        if col is not None:
            row |= {"AP": ap(precision, slice(None), col), "AP50": ap(precision, 0, col), "AP75": ap(precision, 5, col)}
            curves[n] = (recall_points, np.clip(precision[0, :, col], 0, None))
        if mask_precision is not None:
            m = mask_present.index(c) if c in mask_present else None
            row |= {f"mask_{k}": float("nan") if m is None else ap(mask_precision, t, m)
                    for k, t in (("AP", slice(None)), ("AP50", 0), ("AP75", 5))}  # fmt: skip
        per_class.append(row | {"gt_boxes": int(gt[c]), "detections": int(dets[c])})
    per_image = []
    for r in records:
        tp, fp, fn = match_boxes(r["pred"], r["target"], score_thresh)
        f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        per_image.append({"index": r["index"], "path": r["path"], "score": f1, "tp": tp, "fp": fp, "fn": fn})
    return {"task": "detection", "per_class": per_class, "per_image": per_image, "confusion": None,
            "curves": curves}  # fmt: skip
