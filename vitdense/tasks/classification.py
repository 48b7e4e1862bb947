"""ClassificationTask: timm's own head on a pretrained ViT/DeiT/Swin, label smoothing, Mixup/CutMix."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from vitdense.models.backbone import Backbone
from vitdense.models.config import merge_config
from vitdense.models.heads import ClassificationHead
from vitdense.tasks import panels
from vitdense.tasks.base import BaseTask
from vitdense.tasks.predictions import INDEX, append_part, merge_parts

PREDICTIONS = "predictions.csv"


class ClassificationInferenceConfig(TypedDict, total=False):
    """Test-time settings under ``model.init_args.inference``: ``flip`` (average the probabilities of the image and
    its horizontal flip)."""

    flip: bool


class MixupConfig(TypedDict, total=False):
    """timm Mixup/CutMix under ``model.init_args.mixup`` (training batches only).

    Keys: ``mixup_alpha`` (0 = off), ``cutmix_alpha`` (0 = off), ``prob`` (chance a batch is mixed),
    ``switch_prob`` (chance of CutMix instead of Mixup when both are on), ``mode`` (batch, pair or elem).
    """

    mixup_alpha: float
    cutmix_alpha: float
    prob: float
    switch_prob: float
    mode: str


MIXUP_DEFAULTS: MixupConfig = {
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "prob": 1.0,
    "switch_prob": 0.5,
    "mode": "batch",
}


class ClassificationTask(BaseTask[MetricCollection]):
    """Image classification: CLS token (or mean pool) -> norm -> dropout -> Linear, a head beside the backbone.

    DeiT-distilled models average their class and distillation heads. ``task(images)`` maps [0, 1] images
    (B, 3, H, W) to logits (B, num_classes).
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 2,
        head_dropout: float = 0.0,
        label_smoothing: float = 0.1,
        mixup: MixupConfig | None = None,
        inference: ClassificationInferenceConfig | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the model; every other argument is BaseTask's (backbone, optimizer, scheduler, ...).

        Args:
            num_classes: number of classes (linked from the DataModule in the CLI).
            head_dropout: dropout before the classifier.
            label_smoothing: label smoothing of the cross-entropy (also applied to Mixup/CutMix targets).
            mixup: timm Mixup/CutMix settings (mixup_alpha, cutmix_alpha, prob, switch_prob, mode); off by default.
            inference: how val, test and predict score images (flip: average with the horizontal flip).
        """
        super().__init__(num_classes=num_classes, **kwargs)

    def build_backbone(self) -> Backbone:
        return Backbone(self.backbone_cfg, prune=False)

    def configure_models(self) -> None:
        hp = self.hparams
        self.inference_cfg = merge_config(hp.get("inference"), {"flip": False}, "inference")
        self.label_smoothing = hp["label_smoothing"]
        self.head = ClassificationHead(
            self.backbone.embed_dim, self.num_classes, hp["head_dropout"], self.backbone.num_pooled
        )
        self.mixup_cfg = cfg = merge_config(hp["mixup"], dict(MIXUP_DEFAULTS), "mixup")
        self.mixup: Mixup | None = None
        if cfg["mixup_alpha"] > 0 or cfg["cutmix_alpha"] > 0:
            self.mixup = Mixup(
                mixup_alpha=cfg["mixup_alpha"],
                cutmix_alpha=cfg["cutmix_alpha"],
                prob=cfg["prob"],
                switch_prob=cfg["switch_prob"],
                mode=cfg["mode"],
                label_smoothing=self.label_smoothing,
                num_classes=self.num_classes,
            )
        self.soft_loss = SoftTargetCrossEntropy()

    def draw_panel(self, batch: dict[str, Any], min_score: float) -> Any:
        """A grid of the images of ``batch`` captioned with true and predicted class (``tasks.panels``)."""
        probs = self.eval_logits(batch["image"]).softmax(-1)
        score, pred = probs.max(-1)
        images = [panels.display_image(im, self.backbone.cfg.get("rgb_bands")) for im in batch["image"]]
        return panels.classification_panel(images, batch["label"].tolist(), pred.tolist(), score.tolist(),
                                           list(self.class_names))  # fmt: skip

    def configure_metrics(self) -> MetricCollection:
        metrics: dict[str, Metric | MetricCollection] = {
            "acc": MulticlassAccuracy(self.num_classes, average="micro"),
            "f1": MulticlassF1Score(self.num_classes, average="macro"),
        }
        if self.num_classes >= 5:
            metrics["acc_top5"] = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        # No compute groups: torchmetrics merges metrics whose states are equal after the first update, and macro F1
        # and top-5 accuracy hold the same per-class counts whenever that first batch is all right at top-1 (a val
        # or test folder read class by class starts that way); from then on F1 was computed from top-5 counts.
        return MetricCollection(metrics, compute_groups=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) for [0, 1] images (B, 3, H, W)."""
        return self.head(self.backbone.forward_pooled(images))

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for val, test and predict: with ``inference.flip``, the log of the mean probabilities of the
        image and its horizontal flip."""
        if not self.inference_cfg["flip"]:
            return self(images)
        probs = (self(images).softmax(-1) + self(images.flip(-1)).softmax(-1)) / 2
        return probs.clamp_min(1e-12).log()

    def shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        if stage == "train" and self.mixup is not None:
            images, soft = self._mix(images, labels)
            loss = self.soft_loss(self(images), soft)
        else:
            logits = self(images) if stage == "train" else self.eval_logits(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            if stage != "train":
                self.stage_metric(stage).update(logits, labels)
                if self.eval_records is not None:
                    probs = logits.softmax(-1).cpu()
                    for path, label, p in zip(batch["path"], labels.tolist(), probs, strict=True):
                        self.record(path=path, label=label, pred=int(p.argmax()), probs=p.numpy())
        self.log_loss(stage, loss, images.shape[0])
        return loss

    def _mix(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix images and soft targets; with an odd batch the last image stays unmixed.

        timm's Mixup pairs each image with the one mirrored in the batch, so it needs an even count.
        """
        n = images.shape[0] - images.shape[0] % 2
        rest = mixup_target(labels[n:], self.num_classes, lam=1.0, smoothing=self.label_smoothing)
        if n == 0:
            return images, rest
        assert self.mixup is not None  # shared_step mixes only with mixup on
        mixed, soft = self.mixup(images[:n].clone(), labels[:n])
        return torch.cat([mixed, images[n:]]), torch.cat([soft, rest])

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Class id, name and probabilities per image: ``[{"path", "label", "class_name", "probs"}, ...]``."""
        probs = self.eval_logits(batch["image"]).softmax(-1).cpu()
        labels = probs.argmax(-1)
        return [
            {"path": path, "label": int(k), "class_name": self.class_names[int(k)], "probs": p}
            for path, k, p in zip(batch["path"], labels, probs, strict=True)
        ]

    def save_predictions(self, predictions: list[dict[str, Any]], output_dir: Path) -> list[Path]:
        """One row per image for ``predictions.csv`` (path, label, class name, score, all probabilities), appended to
        this process's part; ``finish_predictions`` merges the parts."""
        rows = []
        for p in predictions:
            probs = [f"{v:.6f}" for v in p["probs"].tolist()]
            rows.append((p.get(INDEX), csv_row([p["path"], p["label"], p["class_name"], probs[p["label"]], *probs])))
        append_part(output_dir, PREDICTIONS, self.global_rank, rows)
        return [output_dir / PREDICTIONS] * len(predictions)

    def finish_predictions(self, output_dir: Path, datamodule: Any) -> list[Path]:
        """After predict, on one process: ``predictions.csv`` from every process's part, in dataset order."""
        header = csv_row(["path", "label", "class_name", "score", *[f"p_{n}" for n in self.class_names]])
        path = merge_parts(output_dir, PREDICTIONS, header)
        return [] if path is None else [path]


def csv_row(values: list[Any]) -> str:
    """One CSV line, as ``csv.writer`` writes it."""
    text = io.StringIO()
    csv.writer(text).writerow(values)
    return text.getvalue()
