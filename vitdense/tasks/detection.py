"""DetectionTask: backbone + feature pyramid as the body of a torchvision RetinaNet, FCOS or Faster R-CNN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from vitdense.data.formats.coco import write_coco_results
from vitdense.data.recipe_rules import ANCHOR_SCALES, AUTO, anchor_scale_rule
from vitdense.models.config import merge_config
from vitdense.models.heads.detectors import (
    HEAD_DEFAULTS,
    INSTANCE_DETECTORS,
    DetectionBody,
    DetectionHeadConfig,
    anchor_side,
    build_detector,
    set_anchor_scale,
)
from vitdense.tasks import panels
from vitdense.tasks.base import BaseTask, group_indices
from vitdense.tasks.inference import (
    DETECTION_INFERENCE_DEFAULTS,
    DetectionInferenceConfig,
    check_detection_inference_config,
    infer_detections,
)
from vitdense.tasks.mask_files import class_palette
from vitdense.tasks.metrics import DetectionMAP
from vitdense.tasks.predictions import INDEX, append_part, merge_parts

PREDICTIONS = "predictions.jsonl"


class DetectionTask(BaseTask[DetectionMAP]):
    """Object detection with a pretrained ViT/DeiT/Swin/hybrid backbone and a torchvision detector.

    In eval mode ``task(images)`` takes a (B, 3, H, W) tensor or a list of (3, H, W) tensors in [0, 1] and returns
    one dict per image with ``boxes`` (xyxy, input pixels), ``scores`` and ``labels`` (0..num_classes-1).
    """

    monitor = "val/mAP"
    monitor_mode = "max"
    predicts_masks = False  # InstanceSegmentationTask's detectors also predict masks
    default_head = "retinanet"

    def __init__(
        self,
        num_classes: int = 1,
        head: DetectionHeadConfig | None = None,
        inference: DetectionInferenceConfig | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the model; every other argument is BaseTask's (backbone, optimizer, scheduler, ...).

        Args:
            num_classes: number of object classes, without background (linked from the DataModule in the CLI).
            head: detector settings (name: retinanet|fcos|faster_rcnn, neck: auto|simple_fpn|fpn, channels,
                anchor_scale, min_stride, score_thresh, nms_thresh, detections_per_img, roi_batch_size,
                box_head_width).
            inference: how val, test and predict detect (mode: whole|tile, crop, stride, flip); tiles and flipped
                views are merged by per-class NMS.
        """
        super().__init__(num_classes=num_classes, **kwargs)

    def configure_models(self) -> None:
        self.inference_cfg = merge_config(
            self.hparams.get("inference"), dict(DETECTION_INFERENCE_DEFAULTS), "inference"
        )
        check_detection_inference_config(self.inference_cfg, self.input_size())
        given = {"name": self.default_head, **(self.hparams["head"] or {})}
        self.head_cfg = cfg = merge_config(given, dict(HEAD_DEFAULTS), "head")
        if cfg["name"] in INSTANCE_DETECTORS and not self.predicts_masks:
            raise ValueError(f"head.name={cfg['name']!r} predicts masks: use InstanceSegmentationTask.")
        # The two-stage detectors' labels are shifted by one for their background class.
        self.label_offset = 1 if cfg["name"] in ("faster_rcnn", "mask_rcnn") else 0
        # anchor_scale: auto is chosen from the training boxes in setup("fit"); until then the default's anchors
        self.anchor_scale = ANCHOR_SCALES[0] if cfg["anchor_scale"] == AUTO else cfg["anchor_scale"]
        self.detector = build_detector(cfg["name"], self.backbone, self.num_classes,
                                       {**cfg, "anchor_scale": self.anchor_scale})  # fmt: skip

    @property
    def anchors_from_data(self) -> bool:
        """``head.anchor_scale: auto`` on a head with anchors (FCOS has none to size)."""
        return self.head_cfg["anchor_scale"] == AUTO and self.head_cfg["name"] != "fcos"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.anchors_from_data:
            self.choose_anchor_scale()

    def choose_anchor_scale(self) -> None:
        """``head.anchor_scale: auto`` resolved from the DataModule's training boxes (``anchor_scale_rule``), printed,
        and kept in the hyperparameters: the checkpoint, a later ``test`` and an export use the same anchors."""
        sides = self.training_statistic("training_box_sides", "head.anchor_scale: auto", "measure its training boxes",
                                        f"a number (the default is {ANCHOR_SCALES[0]:g})")  # fmt: skip
        choice = anchor_scale_rule(sides, anchor_side(self.head_cfg["name"], min(self.body.strides)))
        rank_zero_info(f"[vitdense] head.anchor_scale: auto -> {choice.value:g} ({choice.reason})")
        self.use_anchor_scale(choice.value)

    def use_anchor_scale(self, scale: float) -> None:
        """Anchors at ``anchor_scale`` ``scale`` (no weights change), recorded in the hyperparameters."""
        if scale != self.anchor_scale:
            set_anchor_scale(self.detector, self.head_cfg["name"], self.body.strides, scale)
            self.anchor_scale = scale
        self.hparams["head"] = {**(self.hparams["head"] or {}), "anchor_scale": scale}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A run fitted with ``anchor_scale: auto`` saved the scale it chose: a model built from the config (``auto``)
        takes it, so that ``test --ckpt_path`` scores the anchors it trained with."""
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("hyper_parameters", {}).get("head") or {}).get("anchor_scale")
        if self.anchors_from_data and isinstance(saved, int | float):
            self.use_anchor_scale(float(saved))

    def draw_panel(self, batch: dict[str, Any], min_score: float) -> Any:
        """``truth | prediction`` per image of ``batch`` (boxes, masks, class names, scores of at least
        ``min_score``; ``tasks.panels``)."""
        rgb = self.backbone.cfg.get("rgb_bands")
        images = [panels.display_image(im, rgb) for im in batch["image"]]
        preds = self(list(batch["image"]))
        return panels.detection_panel(images, batch["target"], preds, class_palette(256), list(self.class_names),
                                      min_score)  # fmt: skip

    def configure_metrics(self) -> DetectionMAP:
        return DetectionMAP(box_format="xyxy", iou_type="bbox")

    def compute_metrics(self, metric: DetectionMAP, stage: str) -> dict[str, torch.Tensor]:
        result = metric.compute()
        return {f"{stage}/mAP": result["map"], f"{stage}/mAP_50": result["map_50"], f"{stage}/mAP_75": result["map_75"]}

    @property
    def body(self) -> DetectionBody:
        """The detector's backbone and pyramid (torchvision's ``detector.backbone``)."""
        body = self.detector.get_submodule("backbone")
        assert isinstance(body, DetectionBody)  # what build_detector gives the detector
        return body

    def head_modules(self) -> list[nn.Module]:
        return [m for name, m in self.detector.named_children() if name != "backbone"] + [self.body.neck]

    def example_input(self, size: tuple[int, int]) -> Any:
        return [[torch.zeros(self.backbone.in_chans, *size)]]  # forward(images: list of tensors)

    def compile_targets(self) -> list[nn.Module]:
        # The detector's anchors, sampling and box decoding are Python over per-image lists: only the body compiles.
        return [self.backbone, self.body.neck]

    def _targets(self, targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + self.label_offset} for t in targets]

    def _detections(self, outputs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [
            {"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.label_offset} for o in outputs
        ]

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image (eval mode): boxes (xyxy, input pixels), scores and labels, by the ``inference``
        setting (whole or tiled, with or without the flipped image).

        Images of different sizes run in separate groups: torchvision pads a batch to its largest image, and a ViT
        would attend to that padding, so an image's boxes would depend on its batch.
        """
        cfg = self.head_cfg
        return infer_detections(self._detect, list(images), self.inference_cfg, self.input_size(), cfg["nms_thresh"],
                                cfg["detections_per_img"])  # fmt: skip

    def _detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """One pass of the detector, per group of images of one size."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for idx in group_indices(tuple(image.shape[-2:]) for image in images):
            for i, det in zip(idx, self._detections(self.detector([images[i] for i in idx])), strict=True):
                out[i] = det
        return out

    def metric_targets(self, targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """The ground truth the metric compares the detections with."""
        return [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]

    def _losses(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        return sum(self.detector(images, self._targets(targets)).values())

    def _image_loss(self, image: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
        """One image's val/test loss: alone (FCOS and the two-stage heads normalise by what the whole batch holds) and
        under a fixed seed (Faster/Mask R-CNN sample anchors and proposals at random), so that the loss of an image is
        the same in any batch, on any number of processes, in any order."""
        devices = [image.device] if image.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            return self._losses([image], [target])

    def shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images, targets = list(batch["image"]), batch["target"]
        if stage == "train":
            loss = self._losses(images, targets)
        else:
            # torchvision detectors return losses only in train mode: compute them with the body frozen in eval
            # (no BatchNorm statistics or drop-path change), then the detections in eval mode.
            self.detector.train()
            self.body.eval()
            losses = [self._image_loss(image, target) for image, target in zip(images, targets, strict=True)]
            loss = sum(losses[1:], losses[0]) / len(images)
            self.detector.eval()
            preds = self(images)
            truth = self.metric_targets(targets)
            self.stage_metric(stage).update(preds, truth)
            if self.eval_records is not None:
                for path, pred, true in zip(batch["path"], preds, truth, strict=True):
                    self.record(path=path, pred={k: v.cpu() for k, v in pred.items()},
                                target={k: v.cpu() for k, v in true.items()})  # fmt: skip
        self.log_loss(stage, loss, len(images))
        return loss

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Detections per image in its original pixels: ``[{"path", "size", "boxes", "scores", "labels"}, ...]``."""
        out = []
        for det, path, orig, valid in zip(
            self(batch["image"]), batch["path"], batch["orig_size"], batch["valid_size"], strict=True
        ):
            size = (int(orig[0]), int(orig[1]))
            out.append({"path": path, "size": size, **self.to_original(det, size, (int(valid[0]), int(valid[1])))})
        return out

    def to_original(
        self, det: dict[str, torch.Tensor], orig: tuple[int, int], valid: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """One image's detections moved from the model's input pixels (``valid``) to the original image's."""
        (oh, ow), (vh, vw) = orig, valid
        scale = torch.tensor([ow / vw, oh / vh, ow / vw, oh / vh], device=det["boxes"].device)
        return {"boxes": (det["boxes"] * scale).cpu(), "scores": det["scores"].cpu(), "labels": det["labels"].cpu()}

    def save_predictions(self, predictions: list[dict[str, Any]], output_dir: Path) -> list[Path]:
        """One JSON line per image for ``predictions.jsonl`` (boxes xyxy in original pixels), appended to this
        process's part; ``finish_predictions`` merges the parts."""
        rows = [(p.get(INDEX), json.dumps(self.prediction_line(p)) + "\n") for p in predictions]
        append_part(output_dir, PREDICTIONS, self.global_rank, rows)
        return [output_dir / PREDICTIONS] * len(predictions)

    def prediction_line(self, pred: dict[str, Any]) -> dict[str, Any]:
        """One image's line of ``predictions.jsonl``."""
        labels = pred["labels"].tolist()
        return {
            "path": pred["path"],
            "height": pred["size"][0],
            "width": pred["size"][1],
            "boxes": [[round(v, 2) for v in box] for box in pred["boxes"].tolist()],
            "scores": [round(v, 4) for v in pred["scores"].tolist()],
            "labels": labels,
            "class_names": [self.class_names[k] for k in labels],
        }

    def finish_predictions(self, output_dir: Path, datamodule: Any) -> list[Path]:
        """After predict, on one process: ``predictions.jsonl`` from every process's part, in dataset order, and as
        COCO results (``coco_results.json`` + ``coco_images.json``), with the dataset's category ids and, for images
        of a COCO split, that split's image ids."""
        path = merge_parts(output_dir, PREDICTIONS)
        if path is None:  # no image to predict
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        coco_ids = getattr(datamodule, "coco_ids", None)
        if coco_ids is not None:
            categories, image_ids = coco_ids([Path(line["path"]).name for line in lines])
        else:  # no COCO categories: ids 1..K in label order
            categories, image_ids = [(k + 1, name) for k, name in enumerate(self.class_names)], None
        return [path, *write_coco_results(lines, output_dir, categories, image_ids)]
