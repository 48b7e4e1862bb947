"""Object detection from COCO JSON: reading and validating annotation files, the dataset and its DataModule.

Boxes are ``xyxy`` float pixels of the transformed image; batches are lists of images (see
``vitdense.data.transforms.detection_collate``). The presets are in ``vitdense.data.transforms``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.base import BaseDataModule, Split
from vitdense.data.folders import PredictImageFolder, examples
from vitdense.data.io import image_size as read_image_size
from vitdense.data.io import load_image
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    apply_box_transform,
    detection_collate,
    detection_eval_transform,
    detection_train_transform,
)

LAYOUT = "root/{split}/images/ + root/{split}/annotations.json (COCO format)"
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class _Record:
    """One image of a COCO split after validation: file, JSON size and its kept boxes (xyxy, clipped)."""

    path: Path
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file '{path}' not found. Expected the layout {LAYOUT}.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}. Check the file is a COCO annotation file.") from err
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"'{path}' has no 'images' list; is it a COCO annotation file ({LAYOUT})?")
    return data


def _parse_categories(categories: Any, path: Path) -> dict[int, str]:
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"'{path}' has no 'categories'. List each category as {{\"id\": ..., \"name\": ...}}.")
    out: dict[int, str] = {}
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"'{path}' has a category without an id: {cat!r}. Give each category an 'id'.")
        if int(cat["id"]) in out:
            raise ValueError(f"'{path}' lists category id {cat['id']} twice. Give each category its own id.")
        out[int(cat["id"])] = str(cat.get("name", f"class_{cat['id']}"))
    return dict(sorted(out.items()))


def read_categories(path: str | Path) -> dict[int, str]:
    """Return ``{category id: name}`` of a COCO file, sorted by id (label ``i`` is the ``i``-th id).

    Only the ``categories`` list is decoded when it can be found in the text (a full parse of a large training
    file takes seconds and much memory); otherwise the whole file is parsed.

    Args:
        path: COCO annotation JSON.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file has no categories, or two share an id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file '{path}' not found. Expected the layout {LAYOUT}.")
    text = path.read_text()
    # Inside a JSON string a quote is escaped, so an unescaped '"categories":' is a key; the top-level one is
    # usually the last (COCO writes it after images and annotations).
    for match in reversed(list(re.finditer(r'"categories"\s*:\s*(?=\[)', text))):
        try:
            categories, _ = json.JSONDecoder().raw_decode(text, match.end())
        except json.JSONDecodeError:
            break
        if isinstance(categories, list) and all(isinstance(c, dict) and "id" in c for c in categories):
            return _parse_categories(categories, path)
    return _parse_categories(_read_json(path).get("categories"), path)


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
    ) -> None:
        """Read and validate the annotation file.

        Args:
            images: Folder that the images' ``file_name`` entries are relative to.
            annotations: COCO annotation JSON.
            categories: ``{category id: name}`` that defines the labels (label ``i`` = ``i``-th sorted id);
                defaults to this file's own categories.
            transform: Albumentations pipeline with ``pascal_voc`` box params and a ``labels`` field; defaults to
                ``detection_eval_transform()``.
        """
        self.images = Path(images)
        self.annotations = Path(annotations)
        data = _read_json(self.annotations)
        if categories is None:
            categories = _parse_categories(data.get("categories"), self.annotations)
        elif data.get("categories"):
            self._check_same_names(_parse_categories(data["categories"], self.annotations), categories)
        self.categories = categories
        self.transform = transform or detection_eval_transform()
        self.records = self._scan(data)

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

    def _scan(self, data: dict[str, Any]) -> list[_Record]:
        if not self.images.is_dir():
            raise FileNotFoundError(
                f"Image folder '{self.images}' (for '{self.annotations}') does not exist. Expected the layout "
                f"{LAYOUT}, or set the split's *_images path."
            )
        label_of = {cat_id: i for i, cat_id in enumerate(sorted(self.categories))}
        records: dict[int, _Record] = {}
        missing = []
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise ValueError(
                    f"'{self.annotations}' has an image entry without 'id' or 'file_name': {img!r}. COCO image "
                    "entries need both (plus 'width' and 'height')."
                )
            if img["id"] in records:
                raise ValueError(f"'{self.annotations}' lists image id {img['id']} twice. Give each its own id.")
            path = self.images / img["file_name"]
            if not path.is_file():
                missing.append(img["file_name"])
                continue
            if "width" in img and "height" in img:
                width, height = int(img["width"]), int(img["height"])
            else:
                width, height = read_image_size(path)
            records[img["id"]] = _Record(path, height, width, np.zeros((0, 4)), np.zeros(0, np.int64))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) listed in '{self.annotations}' are missing from '{self.images}' "
                f"(e.g. {examples(missing)}). Add the files, fix 'file_name', or remove those image entries."
            )

        boxes: dict[int, list[list[float]]] = {i: [] for i in records}
        labels: dict[int, list[int]] = {i: [] for i in records}
        counts = {"clipped": 0, "non-positive": 0, "outside": 0, "crowd": 0}
        for index, ann in enumerate(data.get("annotations") or []):
            ann_id = ann.get("id", f"#{index}")
            if ann.get("image_id") not in records:
                raise ValueError(
                    f"Annotation id {ann_id} in '{self.annotations}' refers to image id {ann.get('image_id')}, "
                    "which is not in its 'images' list. Add the image entry or remove the annotation."
                )
            if ann.get("category_id") not in label_of:
                raise ValueError(
                    f"Annotation id {ann_id} in '{self.annotations}' has category id {ann.get('category_id')}, "
                    f"which is not among the category ids {list(label_of)}. Fix the annotation or add the "
                    "category to the training annotations' 'categories'."
                )
            if ann.get("iscrowd", 0):
                counts["crowd"] += 1
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list | tuple) or len(bbox) != 4:
                raise ValueError(
                    f"Annotation id {ann_id} in '{self.annotations}' has bbox {bbox!r}; COCO boxes are [x, y, w, h]."
                )
            x, y, w, h = (float(v) for v in bbox)
            if not (w > 0 and h > 0):
                counts["non-positive"] += 1
                continue
            record = records[ann["image_id"]]
            x0, y0 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
            x1, y1 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
            if x1 <= x0 or y1 <= y0:
                counts["outside"] += 1
                continue
            counts["clipped"] += (x0, y0, x1, y1) != (x, y, x + w, y + h)
            boxes[ann["image_id"]].append([x0, y0, x1, y1])
            labels[ann["image_id"]].append(label_of[ann["category_id"]])
        self._warn(counts)
        for image_id, record in records.items():
            record.boxes = np.asarray(boxes[image_id], dtype=np.float64).reshape(-1, 4)
            record.labels = np.asarray(labels[image_id], dtype=np.int64)
        return list(records.values())

    def _warn(self, counts: dict[str, int]) -> None:
        parts = [
            f"clipped {counts['clipped']} box(es) to the image",
            f"dropped {counts['non-positive']} with non-positive width or height",
            f"dropped {counts['outside']} lying entirely outside their image",
            f"skipped {counts['crowd']} iscrowd=1 annotation(s)",
        ]
        kept = [part for part, n in zip(parts, counts.values()) if n]
        if kept:
            warnings.warn(f"'{self.annotations}': {', '.join(kept)}.", stacklevel=3)

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
        return CocoDetectionDataset(images, annotations, self.categories, transform)

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Collect items in lists (images keep their own sizes)."""
        return detection_collate
