"""Object detection from COCO JSON: the dataset and its DataModule (the files are read by ``coco_format``).

Boxes are ``xyxy`` float pixels of the transformed image; batches are lists of images (see
``vitdense.data.transforms.detection_collate``). The presets are in ``vitdense.data.transforms``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.base import BaseDataModule, Split
from vitdense.data.coco_format import (
    LAYOUT,
    check_mask_matches_box,
    decode_mask,
    match_image_ids,
    parse_categories,
    read_categories,
    read_coco_json,
    scan_annotations,
    warn_box_policy,
)
from vitdense.data.folders import PredictImageFolder
from vitdense.data.io import load_image
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    apply_box_transform,
    apply_instance_transform,
    detection_collate,
    detection_eval_transform,
    detection_train_transform,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")


class CocoDetectionDataset(Dataset):
    """Images and boxes of one COCO annotation file, validated when the dataset is built.

    Box policy: ``iscrowd=1`` annotations are skipped; boxes with non-positive width or height are dropped;
    boxes reaching past the image are clipped to it and boxes entirely outside it dropped. Nothing is silent:
    one warning per file gives the counts. Images without annotations are kept as negatives.
    Items are ``dict(image=(3, H, W) float in [0, 1], target={"boxes": (N, 4) float32 xyxy, "labels": (N,) long},
    path=str, orig_size=(h, w), valid_size=(h, w))`` with boxes in the transformed image's pixels.
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
        self.annotations = Path(annotations)
        data = read_coco_json(self.annotations)
        if categories is None:
            categories = parse_categories(data.get("categories"), self.annotations)
        elif data.get("categories"):
            self._check_same_names(parse_categories(data["categories"], self.annotations), categories)
        self.categories = categories
        self.transform = transform or detection_eval_transform()
        self.masks = masks
        self.records, counts = scan_annotations(data, self.images, self.annotations, categories, masks)
        warn_box_policy(self.annotations, counts)

    def _check_same_names(self, own: dict[int, str], known: dict[int, str]) -> None:
        """A category id must name the same category here as in the file that defined the labels."""
        shared = sorted(own.keys() & known.keys())
        conflicts = [f"id {i}: {own[i]!r} here, {known[i]!r} there" for i in shared if own[i] != known[i]]
        if conflicts:
            raise ValueError(
                f"'{self.annotations}' names categories differently from the annotations the labels come from "
                f"(usually the training split): {'; '.join(conflicts[:5])}. Use the same category ids and names "
                "in every split."
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"Image '{record.path}' is {image.shape[1]}x{image.shape[0]} but '{self.annotations}' says "
                f"{record.width}x{record.height} (width x height). Fix its 'width'/'height' entry."
            )
        if self.masks:
            masks = np.zeros((0, record.height, record.width), np.uint8)
            if record.segmentations:
                masks = np.stack([decode_mask(s, record.height, record.width) for s in record.segmentations])
            for mask, box, ann_id in zip(masks, record.boxes, record.ann_ids, strict=True):
                check_mask_matches_box(mask, box, f"{ann_id} in '{self.annotations}'")
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


@register_datamodule
class CocoDetectionDataModule(BaseDataModule):
    """Object detection from COCO JSON: ``root/{split}/images/`` + ``root/{split}/annotations.json`` per split.

    Any split's image folder or JSON may be given explicitly instead (``train_images``, ``val_annotations``, ...).
    Labels are ``0..K-1`` in order of sorted category id of the training JSON (read in ``__init__``; of the val or
    test JSON when there is no training split); ``class_names`` are the category names. Training resizes the long
    side to a random ``scale_range`` multiple of ``image_size``, pads or randomly crops to a square and flips;
    val/test/predict only resize the long side to ``image_size``. See ``CocoDetectionDataset`` for the box policy.
    Batches are lists (see ``detection_collate``).
    """

    def __init__(
        self,
        root: str | None = None,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        image_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 1.5),
        min_box_size: float = 1.0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
    ) -> None:
        """Read the categories of the training annotations; the splits are scanned in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders, each holding ``images/``
                and ``annotations.json``.
            train_images: Training image folder (overrides ``root/train/images``).
            train_annotations: Training COCO JSON (overrides ``root/train/annotations.json``).
            val_images: Validation image folder (overrides ``root/val/images``).
            val_annotations: Validation COCO JSON (overrides ``root/val/annotations.json``).
            test_images: Test image folder (overrides ``root/test/images``).
            test_annotations: Test COCO JSON (overrides ``root/test/annotations.json``).
            image_size: Side of the square training images, and long side of val/test/predict images.
            scale_range: Range of the random long-side scale, relative to ``image_size``, in training.
            min_box_size: Boxes narrower or lower than this many pixels after a transform are dropped.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = None if root is None else Path(root)
        explicit = {
            "train": (train_images, train_annotations),
            "val": (val_images, val_annotations),
            "test": (test_images, test_annotations),
        }
        self.paths = {split: self._resolve(split, *explicit[split]) for split in SPLITS}
        self.image_size = image_size
        self.scale_range = scale_range
        self.min_box_size = min_box_size
        self.predict_dir = predict_dir
        self.categories = self._read_categories({s: explicit[s][1] is not None for s in SPLITS})
        self.num_classes = len(self.categories)
        self.class_names = list(self.categories.values())

    def _resolve(self, split: str, images: str | None, annotations: str | None) -> tuple[Path | None, Path | None]:
        if self.root is None:
            return (Path(images) if images else None, Path(annotations) if annotations else None)
        return (
            Path(images) if images else self.root / split / "images",
            Path(annotations) if annotations else self.root / split / "annotations.json",
        )

    def _read_categories(self, explicit: dict[str, bool]) -> dict[int, str]:
        """Categories of the first split's JSON among train, val, test; an explicitly given JSON must exist."""
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"Dataset root '{self.root}' does not exist. Expected the layout {LAYOUT}.")
        for split in SPLITS:
            path = self.paths[split][1]
            if path is not None and explicit[split] and not path.is_file():
                raise FileNotFoundError(f"{split}_annotations file '{path}' not found. Check the path.")
        found = [p for _, p in self.paths.values() if p is not None and p.is_file()]
        if not found:
            looked = [str(p) for _, p in self.paths.values() if p is not None]
            raise FileNotFoundError(
                f"No COCO annotation file found to read the categories from (looked for {looked or 'none'}). "
                f"Set root (layout {LAYOUT}) or train_annotations."
            )
        return read_categories(found[0])

    MASKS = False  # CocoInstanceDataModule reads the segmentations too

    @property
    def input_size(self) -> int:
        return self.image_size

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return PredictImageFolder(self.predict_dir, detection_eval_transform(self.image_size, None))
        images, annotations = self.paths[split]
        if images is None or annotations is None:
            raise ValueError(
                f"The {split} split has no {'images folder' if images is None else 'annotation file'}: set root "
                f"(layout {LAYOUT}) or data.init_args.{split}_images and {split}_annotations."
            )
        if split == "train":
            transform = detection_train_transform(self.image_size, self.scale_range, self.min_box_size)
        else:
            transform = detection_eval_transform(self.image_size, self.min_box_size)
        return CocoDetectionDataset(images, annotations, self.categories, transform, masks=self.MASKS)

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Collect items in lists (images keep their own sizes)."""
        return detection_collate

    def coco_ids(self, names: list[str]) -> tuple[list[tuple[int, str]], dict[str, int] | None]:
        """For COCO results of predictions on images ``names``: each label's ``(category id, name)``, and the image
        ids of the first split (train, val, test) whose annotation file lists all of them (else ``None``)."""
        files = [p for _, p in self.paths.values() if p is not None and p.is_file()]
        return list(self.categories.items()), match_image_ids(names, files)


@register_datamodule
class CocoInstanceDataModule(CocoDetectionDataModule):
    """Instance segmentation from COCO JSON, in the detection layout: each annotation's ``segmentation`` (polygons
    or RLE, as COCO writes them) becomes a mask that follows its box through every transform (and is dropped with
    it). Targets hold ``boxes``, ``labels`` and ``masks``. A segmentation outside its image, of another size, empty,
    or far from its bbox is an error naming the annotation.
    """

    MASKS = True


@register_datamodule
class COCO2017DataModule(CocoDetectionDataModule):
    """COCO 2017 detection in its official layout: ``root/{train2017,val2017}/*.jpg`` +
    ``root/annotations/instances_{train2017,val2017}.json``. ``test`` evaluates on val2017 (test-dev has no
    public labels). The 80 categories and their names come from the annotation files.
    """

    def __init__(
        self, root: str, image_size: int = 1024, scale_range: tuple[float, float] = (0.1, 2.0), **kwargs: Any
    ) -> None:
        """Point the COCO reader at the official files; every other argument is ``CocoDetectionDataModule``'s.

        Args:
            root: Folder holding ``train2017/``, ``val2017/`` and ``annotations/``.
            image_size: Side of the square training images (ViTDet: 1024), and long side of val/test images.
            scale_range: Range of the random long-side scale in training (ViTDet's large-scale jitter: 0.1-2.0).
        """
        base = Path(root)
        layout = "root/{train2017,val2017}/*.jpg + root/annotations/instances_{train2017,val2017}.json"
        for folder in (base / "val2017", base / "annotations"):
            if not folder.is_dir():
                raise FileNotFoundError(f"Folder '{folder}' not found. Expected the official layout {layout}.")
        ann = base / "annotations"
        train, val = ann / "instances_train2017.json", ann / "instances_val2017.json"
        super().__init__(
            train_images=str(base / "train2017"), train_annotations=str(train),
            val_images=str(base / "val2017"), val_annotations=str(val),
            test_images=str(base / "val2017"), test_annotations=str(val),
            image_size=image_size, scale_range=scale_range, **kwargs,
        )  # fmt: skip


@register_datamodule
class COCO2017InstanceDataModule(COCO2017DataModule):
    """COCO 2017 instance segmentation: ``COCO2017DataModule`` with each annotation's mask (polygons or RLE) too."""

    MASKS = True
