"""SegmentationTask: backbone -> pyramid neck -> UPerNet (+ auxiliary FCN head), per-pixel losses, split-wide mIoU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from vitdense.data.recipe_rules import AUTO, class_weight_rule, single_object_rule
from vitdense.data.regions import keep_largest
from vitdense.models.config import merge_config
from vitdense.models.heads import FCNHead, LinearHead, UPerHead
from vitdense.models.losses import cross_entropy, frequency_weights, ohem_cross_entropy
from vitdense.models.necks import NeckName, build_neck
from vitdense.models.resize import resize_bilinear
from vitdense.tasks import panels
from vitdense.tasks.base import BaseTask, group_indices
from vitdense.tasks.inference import INFERENCE_DEFAULTS, InferenceConfig, check_inference_config, infer_logits
from vitdense.tasks.mask_files import class_palette, display_image, save_new_png
from vitdense.tasks.metrics import segmentation_scores
from vitdense.tasks.segmentation_config import (
    CLASS_WEIGHTS_KEY,
    HEAD_DEFAULTS,
    LOSS_DEFAULTS,
    WEIGHTS_FROM_MASKS,
    SegmentationLossConfig,
    UPerNetConfig,
)


class SegmentationTask(BaseTask[MulticlassConfusionMatrix]):
    """Semantic segmentation with a pretrained ViT/DeiT/Swin/hybrid backbone and a UPerNet head.

    ``task(images)`` maps [0, 1] images (B, 3, H, W) of any size to logits (B, num_classes, H, W).
    """

    monitor = "val/mIoU"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 2,
        ignore_index: int = 255,
        neck: NeckName = "auto",
        head: UPerNetConfig | None = None,
        loss: SegmentationLossConfig | None = None,
        inference: InferenceConfig | None = None,
        overlays: bool = False,
        class_colors: list[tuple[int, int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the model; every other argument is BaseTask's (backbone, optimizer, scheduler, ...).

        Args:
            num_classes: number of classes (linked from the DataModule in the CLI).
            ignore_index: mask value excluded from loss and metrics (linked from the DataModule in the CLI).
            neck: pyramid neck; auto = multilevel for plain ViTs, layernorm for hierarchical backbones.
            head: decode head (name: upernet | linear; channels, pool_scales, dropout, aux_weight, ...).
            loss: loss terms (ce_weight, dice_weight, focal_weight, lovasz_weight, class_weights, label_smoothing,
                ohem_thresh, ohem_min_kept).
            inference: how val, test and predict compute logits (mode: whole|slide, crop, stride, flip, scales) and
                which classes they keep as one solid object (keep_largest: class names or ids, or auto).
            overlays: ``predict`` also writes ``overlays/<image>.png``, each image half-blended with its predicted
                mask's class colours, to look at.
            class_colors: RGB colour of each class for predicted masks and overlays (linked from the DataModule's
                class table in the CLI); default PASCAL VOC's colour map.
        """
        super().__init__(num_classes=num_classes, **kwargs)

    def configure_models(self) -> None:
        hp = self.hparams
        self.ignore_index = hp["ignore_index"]
        colors = hp.get("class_colors")
        if colors is not None and (len(colors) != self.num_classes or any(len(c) != 3 for c in colors)):
            raise ValueError(
                f"class_colors has {len(colors)} entries but num_classes is {self.num_classes}; give one [r, g, b] "
                "per class."
            )
        self.head_cfg = cfg = merge_config(hp["head"], dict(HEAD_DEFAULTS), "head")
        self.loss_cfg = merge_config(hp["loss"], dict(LOSS_DEFAULTS), "loss")
        self.inference_cfg = merge_config(hp.get("inference"), dict(INFERENCE_DEFAULTS), "inference")
        check_inference_config(self.inference_cfg, self.input_size())
        self.keep_largest  # noqa: B018  (an unknown class name or id fails here, not at the first validation)
        self.neck = build_neck(
            hp["neck"], self.backbone.out_channels, self.backbone.strides, self.backbone.hierarchical
        )
        channels = self.neck.out_channels
        if cfg["name"] not in ("upernet", "linear"):
            raise ValueError(f"head.name: '{cfg['name']}' is not one of upernet, linear.")
        if cfg["name"] == "linear":
            self.decode_head: nn.Module = LinearHead(channels, self.num_classes, cfg["dropout"])
        else:
            self.decode_head = UPerHead(
                channels, self.num_classes, cfg["channels"], tuple(cfg["pool_scales"]), cfg["dropout"]
            )
        self.auxiliary_head = None
        if cfg["aux_weight"] > 0 and cfg["name"] == "upernet":
            idx = cfg["aux_in_index"]
            if not -len(channels) <= idx < len(channels):
                raise ValueError(f"head.aux_in_index={idx} is out of range for {len(channels)} pyramid levels.")
            self.auxiliary_head = FCNHead(
                channels[idx], self.num_classes, cfg["aux_channels"], in_index=idx, dropout=cfg["dropout"]
            )
        self._build_losses()

    def _build_losses(self) -> None:
        import segmentation_models_pytorch as smp

        cfg = self.loss_cfg
        weights = cfg["class_weights"]
        if isinstance(weights, str):
            if weights not in WEIGHTS_FROM_MASKS:
                raise ValueError(f"loss.class_weights: '{weights}' is not one of {WEIGHTS_FROM_MASKS} or a list.")
            weights = None  # derived from the training masks in setup("fit")
        elif weights is not None and len(weights) != self.num_classes:
            raise ValueError(f"loss.class_weights has {len(weights)} values but num_classes is {self.num_classes}.")
        # Not a buffer: weights from the masks are set in setup("fit"), after an EMA callback copied the buffers.
        self.ce_class_weights = torch.tensor(weights, dtype=torch.float) if weights else None
        self.dice_loss = (
            smp.losses.DiceLoss("multiclass", ignore_index=self.ignore_index) if cfg["dice_weight"] > 0 else None
        )
        self.focal_loss = (
            smp.losses.FocalLoss("multiclass", ignore_index=self.ignore_index) if cfg["focal_weight"] > 0 else None
        )
        self.lovasz_loss = (
            smp.losses.LovaszLoss("multiclass", ignore_index=self.ignore_index) if cfg["lovasz_weight"] > 0 else None
        )

    @property
    def keep_largest(self) -> list[int]:
        """Class ids that predictions keep as one solid object (``inference.keep_largest``; ``auto`` before it was
        chosen at fit time keeps none)."""
        keep = self.inference_cfg.get("keep_largest") or []
        if keep == AUTO:
            return []
        ids = []
        for k in keep:
            if isinstance(k, str) and k in self.class_names:
                ids.append(self.class_names.index(k))
            elif isinstance(k, int) and 0 <= k < self.num_classes:
                ids.append(k)
            else:
                names = ", ".join(self.class_names)
                raise ValueError(
                    f"inference.keep_largest: {k!r} is neither a class name ({names}) nor a class id in "
                    f"[0, {self.num_classes})."
                )
        return ids

    def use_keep_largest(self, ids: list[int]) -> None:
        """Keep the classes ``ids`` as one solid object from now on, recorded in the hyperparameters: the checkpoint,
        a later ``test`` and an export do the same."""
        self.inference_cfg["keep_largest"] = list(ids)
        self.hparams["inference"] = {**(self.hparams.get("inference") or {}), "keep_largest": list(ids)}

    def classes_of(self, logits: torch.Tensor) -> torch.Tensor:
        """Class ids (B, H, W) of logits (B, K, H, W): the most likely class, each class of ``keep_largest`` then
        reshaped into one solid object (``vitdense.data.regions.keep_largest``)."""
        pred = logits.argmax(1)
        keep = self.keep_largest
        if not keep:
            return pred
        scores = logits.detach().float().cpu().numpy()
        out = [keep_largest(p, s, keep) for p, s in zip(pred.cpu().numpy(), scores, strict=True)]
        return torch.from_numpy(np.stack(out)).to(pred.device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.inference_cfg.get("keep_largest") == AUTO:
            present, solid = self.training_statistic(
                "class_object_counts", "inference.keep_largest: auto",
                "find the connected regions of its training masks", "a list of class names, or [] for none",
            )  # fmt: skip
            objects = single_object_rule(present, solid, list(self.class_names))
            kept = [self.class_names[k] for k in objects.value]
            rank_zero_info(f"[vitdense] inference.keep_largest: auto -> {kept} ({objects.reason})")
            self.use_keep_largest(objects.value)
        rule = self.loss_cfg["class_weights"]
        if stage != "fit" or not isinstance(rule, str):
            return
        pixels, image_pixels = self.training_statistic(
            "class_pixel_counts", f"loss.class_weights: {rule}", "count the pixels of each class in its training masks",
            f"a list of {self.num_classes} weights",
        )  # fmt: skip
        if rule == AUTO:
            choice = class_weight_rule(pixels, list(self.class_names))
            rank_zero_info(f"[vitdense] loss.class_weights: auto -> {choice.value} ({choice.reason})")
            if choice.value is None:
                self.ce_class_weights = None
                return
            rule = choice.value
        weights = frequency_weights(pixels, image_pixels, sqrt=rule.startswith("sqrt"))
        self.ce_class_weights = weights
        names = ", ".join(f"{n} {w:.2f}" for n, w in zip(self.class_names, weights.tolist(), strict=True))
        rank_zero_info(f"[vitdense] class weights ({rule} of the training masks): {names}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Class weights derived from the training masks go with the checkpoint: validate, test and evaluate of the
        run then compute the val loss that fit logged (not an unweighted one). Kept beside the state dict, not as a
        buffer: the EMA callback copies the model before setup("fit") derives them."""
        super().on_save_checkpoint(checkpoint)
        if isinstance(self.loss_cfg["class_weights"], str) and self.ce_class_weights is not None:
            checkpoint[CLASS_WEIGHTS_KEY] = self.ce_class_weights.tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Class weights and ``keep_largest: auto`` chosen at fit time come back into a model built from the config,
        so that ``test --ckpt_path`` scores what fit chose."""
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("hyper_parameters", {}).get("inference") or {}).get("keep_largest")
        if self.inference_cfg.get("keep_largest") == AUTO and isinstance(saved, list):
            self.use_keep_largest(saved)
        weights = checkpoint.get(CLASS_WEIGHTS_KEY)
        if weights is not None:
            self.ce_class_weights = torch.tensor(weights, dtype=torch.float)

    def draw_panel(self, batch: dict[str, Any], min_score: float) -> np.ndarray:
        """``image | truth | prediction | errors`` per image of ``batch``, a class legend below (``tasks.panels``)."""
        mask = batch["mask"]
        mask_sizes = batch.get("mask_size") or [tuple(mask.shape[-2:])] * mask.shape[0]
        valid = batch.get("valid_size") or [tuple(batch["image"].shape[-2:])] * mask.shape[0]
        preds: dict[int, np.ndarray] = {}
        for idx, logits in self.logits_per_size(batch["image"], batch.get("valid_size"), mask_sizes):
            preds |= {i: p for i, p in zip(idx, self.classes_of(logits).cpu().numpy(), strict=True)}
        rgb = self.backbone.cfg.get("rgb_bands")
        images, truths = [], []
        for i in range(mask.shape[0]):
            (h, w), (vh, vw) = mask_sizes[i], valid[i]
            images.append(panels.display_image(batch["image"][i, :, : int(vh), : int(vw)], rgb))
            truths.append(mask[i, : int(h), : int(w)].cpu().numpy())
        ordered = [preds[i] for i in range(mask.shape[0])]
        return panels.segmentation_panel(images, truths, ordered, self.palette(), list(self.class_names),
                                         self.ignore_index)  # fmt: skip

    def configure_metrics(self) -> MulticlassConfusionMatrix:
        # One confusion matrix over the whole split (summed over batches and processes), never per-batch means.
        return MulticlassConfusionMatrix(self.num_classes, ignore_index=self.ignore_index, validate_args=False)

    def compute_metrics(self, metric: MulticlassConfusionMatrix, stage: str) -> dict[str, torch.Tensor]:
        scores = segmentation_scores(metric.compute())
        out = {f"{stage}/{k}": scores[k].float() for k in ("mIoU", "pixel_acc", "mDice")}
        for name, iou in zip(self.class_names, scores["IoU"], strict=True):
            if not torch.isnan(iou):
                out[f"{stage}/IoU/{name}"] = iou.float()
        return out

    def forward_train(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Main and auxiliary logits, both at the input size."""
        h, w = images.shape[-2:]
        features = self.neck(self.backbone(images))
        padded = self.backbone.pad(images).shape[-2:]
        logits = self._to_input_size(self.decode_head(features), padded, (h, w))
        aux = None
        if self.auxiliary_head is not None and self.training:
            aux = self._to_input_size(self.auxiliary_head(features), padded, (h, w))
        return logits, aux

    @staticmethod
    def _to_input_size(logits: torch.Tensor, padded: torch.Size, size: tuple[int, int]) -> torch.Tensor:
        # Bilinear to the padded input, cropped to the image: as F.interpolate, with a matmul backward.
        return resize_bilinear(logits, (padded[0], padded[1]), keep=size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits (B, num_classes, H, W) for [0, 1] images (B, 3, H, W)."""
        return self.forward_train(images)[0]

    def compute_loss(self, logits: torch.Tensor, mask: torch.Tensor, ohem: bool = False) -> torch.Tensor:
        """The configured loss terms; ``ohem``: the cross-entropy over hard pixels (main head in training)."""
        cfg = self.loss_cfg
        if not (mask != self.ignore_index).any():
            return logits.sum() * 0.0  # cross-entropy over zero pixels is NaN
        if self.ce_class_weights is not None and self.ce_class_weights.device != logits.device:
            self.ce_class_weights = self.ce_class_weights.to(logits.device)
        ce_args = {"weight": self.ce_class_weights, "ignore_index": self.ignore_index,
                   "label_smoothing": cfg["label_smoothing"]}  # fmt: skip
        if ohem and cfg["ohem_thresh"] is not None:
            ce = ohem_cross_entropy(logits, mask, thresh=cfg["ohem_thresh"], min_kept=cfg["ohem_min_kept"], **ce_args)
        else:
            ce = cross_entropy(logits, mask, **ce_args)
        loss = cfg["ce_weight"] * ce
        if self.dice_loss is not None:
            loss = loss + cfg["dice_weight"] * self.dice_loss(logits, mask)
        if self.focal_loss is not None:
            loss = loss + cfg["focal_weight"] * self.focal_loss(logits, mask)
        if self.lovasz_loss is not None:
            loss = loss + cfg["lovasz_weight"] * self.lovasz_loss(logits, mask)
        return loss

    def shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        images, mask = batch["image"], batch["mask"]
        if stage != "train":
            return self._eval_step(batch, stage)
        logits, aux = self.forward_train(images)
        loss = self.compute_loss(logits, mask, ohem=True)
        if aux is not None:
            loss = loss + self.head_cfg["aux_weight"] * self.compute_loss(aux, mask)
        self.log_loss(stage, loss, images.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        """Loss and confusion matrix with each image run at its own size and scored at its mask's resolution."""
        mask = batch["mask"]
        mask_sizes = batch.get("mask_size") or [tuple(mask.shape[-2:])] * mask.shape[0]
        loss = mask.new_zeros((), dtype=torch.float)
        records: dict[int, dict[str, Any]] = {}
        for idx, logits in self.logits_per_size(batch["image"], batch.get("valid_size"), mask_sizes):
            h, w = mask_sizes[idx[0]]
            target = mask[idx, :h, :w]
            loss = loss + self.compute_loss(logits, target) * len(idx) / mask.shape[0]
            pred = self.classes_of(logits)
            self.stage_metric(stage).update(pred, target)
            if self.eval_records is not None:
                records |= {i: self._image_counts(p, t) for i, p, t in zip(idx, pred, target, strict=True)}
        for i in sorted(records):
            self.record(path=batch["path"][i], **records[i])
        self.log_loss(stage, loss, mask.shape[0])
        return loss

    def _image_counts(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        """One image's true-positive, false-positive and false-negative pixels per class (void pixels left out)."""
        valid = target != self.ignore_index
        k = self.num_classes
        counts = torch.bincount(target[valid] * k + pred[valid], minlength=k * k).reshape(k, k).cpu()
        tp = counts.diag()
        return {"tp": tp.numpy(), "fp": (counts.sum(0) - tp).numpy(), "fn": (counts.sum(1) - tp).numpy()}

    def logits_per_size(
        self,
        images: torch.Tensor,
        valid_sizes: list[tuple[int, int]] | None,
        out_sizes: list[tuple[int, int]],
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Logits resized to ``out_sizes``, computed once per group of images with the same valid and output size.

        A padded batch would let a ViT attend to another image's padding and stretch its pos-embed to the padded
        grid, so an image's result would depend on its batch; here it never does. Yields ``(indices, logits)``.
        """
        n, _, height, width = images.shape
        valid_sizes = valid_sizes or [(height, width)] * n
        for idx in group_indices(zip(map(tuple, valid_sizes), map(tuple, out_sizes), strict=True)):
            (vh, vw), (oh, ow) = valid_sizes[idx[0]], out_sizes[idx[0]]
            logits = infer_logits(self, images[idx, :, : int(vh), : int(vw)], self.inference_cfg, self.input_size())
            yield idx, resize_bilinear(logits, (int(oh), int(ow)))

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Class-id masks at each image's original size: ``[{"path", "mask"}, ...]``."""
        out: list[dict[str, Any]] = [{} for _ in batch["path"]]
        for idx, logits in self.logits_per_size(batch["image"], batch.get("valid_size"), batch["orig_size"]):
            for i, pred in zip(idx, self.classes_of(logits).cpu(), strict=True):
                name = batch["name"][i] if "name" in batch else Path(batch["path"][i]).stem
                out[i] = {"path": batch["path"][i], "name": name, "mask": pred}
        return out

    def save_predictions(self, predictions: list[dict[str, Any]], output_dir: Path) -> list[Path]:
        """Write each predicted mask as a PNG of class ids named after its image: a palette PNG (the pixel values are
        the class ids, image viewers show them in colour) up to 256 classes, 16-bit grey above.

        A file is never overwritten: the name is the image's stem (its file name where the predict folder has two
        files of one stem), and a name already written raises, naming both images' outputs.
        """
        written, palette = [], self.palette()
        colours = np.array(palette, dtype=np.uint8).reshape(256, 3)
        for pred in predictions:
            name = pred.get("name") or Path(pred["path"]).stem
            mask = pred["mask"].numpy()
            if self.num_classes <= 256:
                image = Image.fromarray(mask.astype(np.uint8))
                image.putpalette(palette)  # an "L" image with a palette is a "P" image
            else:
                image = Image.fromarray(mask.astype(np.uint16))
            written.append(save_new_png(image, output_dir / f"{name}.png", pred["path"]))
            if self.hparams["overlays"]:
                (output_dir / "overlays").mkdir(exist_ok=True)
                blend = display_image(pred["path"]) // 2 + colours[mask % 256] // 2
                save_new_png(Image.fromarray(blend), output_dir / "overlays" / f"{name}.png", pred["path"])
        return written

    def palette(self) -> list[int]:
        """Flat RGB list of 256 colours: the class colours (``class_colors``) first, PASCAL VOC's after them."""
        palette = class_palette(256)
        for k, color in enumerate(self.hparams.get("class_colors") or []):
            palette[3 * k : 3 * k + 3] = [int(c) for c in color]
        return palette

    def head_modules(self) -> list[nn.Module]:
        return [m for m in (self.neck, self.decode_head, self.auxiliary_head) if m is not None]
