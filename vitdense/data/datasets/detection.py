"""Detection and instance datasets: checked per-image records (``CocoRecord``: boxes, labels, masks) -> items.

``DetectionDataset`` takes records from any reader (COCO JSON here, LabelMe / CVAT in ``data.formats.objects``);
``CocoDetectionDataset`` reads them from one COCO file. Boxes are ``xyxy`` float pixels of the transformed image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.formats.coco import (
    CocoRecord,
    check_mask_matches_box,
    decode_mask,
    parse_categories,
    read_coco_json,
    scan_annotations,
    warn_box_policy,
)
from vitdense.data.formats.io import load_image
from vitdense.data.transforms import apply_box_transform, apply_instance_transform, detection_eval_transform


class DetectionDataset(Dataset):
    """Images and their objects from checked records; items are ``dict(image=(3, H, W) float in [0, 1],
    target={"boxes": (N, 4) float32 xyxy, "labels": (N,) long[, "masks": (N, H, W) uint8]}, path=str,
    orig_size=(h, w), valid_size=(h, w))`` with boxes (and masks) in the transformed image's pixels."""

    def __init__(
        self,
        records: list[CocoRecord],
        annotations: Path,
        transform: Callable[..., dict[str, Any]] | None = None,
        masks: bool = False,
    ) -> None:
        """Keep the records.

        Args:
            records: One per image (see ``CocoRecord``).
            annotations: The annotation file or folder, for messages (a record's ``source`` comes first).
            transform: Albumentations pipeline with ``pascal_voc`` box params and a ``labels`` field; defaults to
                ``detection_eval_transform()``.
            masks: Give targets each object's mask (instance segmentation).
        """
        self.records = records
        self.annotations = Path(annotations)
        self.transform = transform or detection_eval_transform()
        self.masks = masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        source = record.source or self.annotations
        image = load_image(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"Image '{record.path}' is {image.shape[1]}x{image.shape[0]} but '{source}' says "
                f"{record.width}x{record.height} (width x height). Fix its width / height entry."
            )
        if self.masks:
            masks = np.zeros((0, record.height, record.width), np.uint8)
            if record.segmentations:
                masks = np.stack([decode_mask(s, record.height, record.width) for s in record.segmentations])
            for mask, box, ann_id in zip(masks, record.boxes, record.ann_ids, strict=True):
                check_mask_matches_box(mask, box, f"{ann_id} in '{source}'")
            tensor, target = apply_instance_transform(self.transform, image, record.boxes, record.labels, masks)
        else:
            tensor, target = apply_box_transform(self.transform, image, record.boxes, record.labels)
        return {
            "image": tensor,
            "target": target,
            "path": str(record.path),
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(tensor.shape[-2:]),
        }


class CocoDetectionDataset(DetectionDataset):
    """Images and boxes of one COCO annotation file, validated when the dataset is built.

    Box policy: ``iscrowd=1`` annotations are skipped; boxes with non-positive width or height are dropped;
    boxes reaching past the image are clipped to it and boxes entirely outside it dropped. Nothing is silent:
    one warning per file gives the counts. Images without annotations are kept as negatives.
    """

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        categories: dict[int, str] | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        masks: bool = False,
    ) -> None:
        """Read and validate the annotation file.

        Args:
            images: Folder that the images' ``file_name`` entries are relative to.
            annotations: COCO annotation JSON.
            categories: ``{category id: name}`` that defines the labels (label ``i`` = ``i``-th sorted id);
                defaults to this file's own categories.
            transform: Albumentations pipeline with ``pascal_voc`` box params and a ``labels`` field; defaults to
                ``detection_eval_transform()``.
            masks: also read each box's ``segmentation`` (instance segmentation): targets get ``masks``.
        """
        self.images = Path(images)
        annotations = Path(annotations)
        data = read_coco_json(annotations)
        if categories is None:
            categories = parse_categories(data.get("categories"), annotations)
        elif data.get("categories"):
            _check_same_names(annotations, parse_categories(data["categories"], annotations), categories)
        self.categories = categories
        records, counts = scan_annotations(data, self.images, annotations, categories, masks)
        warn_box_policy(annotations, counts)
        super().__init__(records, annotations, transform, masks)


def _check_same_names(annotations: Path, own: dict[int, str], known: dict[int, str]) -> None:
    """A category id must name the same category here as in the file that defined the labels."""
    shared = sorted(own.keys() & known.keys())
    conflicts = [f"id {i}: {own[i]!r} here, {known[i]!r} there" for i in shared if own[i] != known[i]]
    if conflicts:
        raise ValueError(
            f"'{annotations}' names categories differently from the annotations the labels come from "
            f"(usually the training split): {'; '.join(conflicts[:5])}. Use the same category ids and names "
            "in every split."
        )
