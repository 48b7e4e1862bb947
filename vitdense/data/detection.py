"""Object detection data: a COCO-JSON DataModule and a synthetic shapes DataModule, with list-of-images batches.

Boxes are ``xyxy`` float pixels of the transformed image. Eval transforms are pure resizes (no crop or pad), so a
model maps its boxes back to the original image by scaling x by ``orig_w / valid_w`` and y by ``orig_h / valid_h``.
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from vitdense.data.base import BaseDataModule, SampleCache, Split, SyntheticDataModule
from vitdense.data.io import image_size as read_image_size
from vitdense.data.io import load_image
from vitdense.data.registry import register_datamodule
from vitdense.data.segmentation import _SPLIT_IDS, PredictImageFolder, _examples
from vitdense.data.shapes import SHAPE_NAMES, dark_background, paint, shape_coverage
from vitdense.data.transforms import random_flips, seed_transform, to_tensor

LAYOUT = "root/{split}/images/ + root/{split}/annotations.json (COCO format)"
SPLITS: tuple[str, ...] = ("train", "val", "test")


def bbox_params(min_box_size: float = 1.0) -> A.BboxParams:
    """Box handling of every detection pipeline: ``pascal_voc`` (xyxy pixel) boxes with a ``labels`` field.

    A box that a transform cuts below ``min_box_size`` pixels wide or high, or to nothing, is dropped with its
    label; boxes are clipped to the image after every step.

    Args:
        min_box_size: Smallest width and height, in pixels, that a box keeps after a transform.
    """
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_visibility=0.0,
        min_area=0.0,
        min_width=min_box_size,
        min_height=min_box_size,
        clip=True,
    )


def detection_train_transform(
    image_size: int, scale_range: tuple[float, float] = (0.5, 1.5), min_box_size: float = 1.0
) -> A.Compose:
    """Resize the long side to a random ``s * image_size``, pad (bottom/right) or randomly crop to a square, flip.

    Args:
        image_size: Side of the square training image.
        scale_range: Range of ``s``, the random long-side scale relative to ``image_size``.
        min_box_size: Boxes narrower or lower than this (pixels, after the transform) are dropped.
    """
    low, high = scale_range
    sizes = list(range(max(1, round(low * image_size)), max(1, round(high * image_size)) + 1))
    return A.Compose(
        [
            A.LongestMaxSize(max_size=sizes),  # one random long side from the list
            A.PadIfNeeded(min_height=image_size, min_width=image_size, position="top_left", fill=0),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
            *to_tensor(),
        ],
        bbox_params=bbox_params(min_box_size),
    )


def detection_eval_transform(image_size: int | None = None, min_box_size: float | None = 1.0) -> A.Compose:
    """Resize the long side to ``image_size`` keeping the aspect ratio (no crop or pad), or keep the image as is.

    Args:
        image_size: Target long side in pixels; ``None`` keeps the original size.
        min_box_size: Boxes narrower or lower than this (pixels, after the resize) are dropped; ``None`` builds a
            pipeline for images only (predict).
    """
    resize = [] if image_size is None else [A.LongestMaxSize(max_size=image_size)]
    boxes = None if min_box_size is None else bbox_params(min_box_size)
    return A.Compose([*resize, *to_tensor()], bbox_params=boxes)


def _apply_boxes(transform: Callable[..., dict[str, Any]], image: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
    """Run an albumentations pipeline on an image and its boxes; return ``(image, target)``."""
    seed_transform(transform)
    out = transform(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
    target = {
        "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
    }
    return out["image"], target


def detection_collate(batch: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Collect every key of the items in lists: images may differ in size, so nothing is stacked or padded.

    Returns:
        ``{"image": [(3, h, w), ...], "target": [{"boxes", "labels"}, ...], "path": [...], "orig_size": [...],
        "valid_size": [...]}`` (``target`` only when the items have one).
    """
    return {key: [item[key] for item in batch] for key in batch[0]}


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
                f"(e.g. {_examples(missing)}). Add the files, fix 'file_name', or remove those image entries."
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
        tensor, target = _apply_boxes(self.transform, image, record.boxes, record.labels)
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


def render_detection_sample(
    rng: np.random.Generator, size: int, max_shapes: int = 3, empty_prob: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw 0 to ``max_shapes`` separate light shapes on a dark textured background and return their boxes.

    Shapes (see ``vitdense.data.shapes``) are 30-50% of the image wide, lie wholly inside it and do not overlap
    (a shape that finds no free place in 20 tries is left out). A box spans the pixels its shape covers by half or
    more.

    Args:
        rng: Random generator; the same state gives the same sample.
        size: Image side in pixels.
        max_shapes: Most shapes per image.
        empty_prob: Probability of an image without shapes.

    Returns:
        ``(size, size, 3)`` uint8 image, ``(N, 4)`` float64 xyxy boxes and ``(N,)`` int64 labels (indices into
        ``SHAPE_NAMES``).
    """
    image = dark_background(rng, size)
    boxes: list[list[float]] = []
    labels: list[int] = []
    count = 0 if rng.random() < empty_prob else int(rng.integers(1, max_shapes + 1))
    for _ in range(count):
        for _attempt in range(20):
            extent = rng.uniform(0.15, 0.25) * size
            reach = 1.05 * extent + 1.0  # every shape lies within 1.05 * extent of its centre
            cx, cy = rng.uniform(reach, size - reach, size=2)
            if all(
                cx + reach < x0 or cx - reach > x1 or cy + reach < y0 or cy - reach > y1 for x0, y0, x1, y1 in boxes
            ):
                break
        else:
            continue
        label = int(rng.integers(len(SHAPE_NAMES)))
        coverage = shape_coverage(rng, label, (cx, cy), extent, size)
        ys, xs = np.nonzero(coverage >= 0.5)
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        labels.append(label)
        image = paint(image, coverage, rng)
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.round(image).astype(np.uint8), box_array, np.asarray(labels, dtype=np.int64)


class SyntheticDetectionDataset(Dataset):
    """Shapes with their boxes, generated on access; item ``i`` of a split is always the same."""

    def __init__(
        self,
        length: int,
        split: str,
        seed: int = 0,
        image_size: int = 64,
        max_shapes: int = 3,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        """Set up the generator.

        Args:
            length: Number of items.
            split: Split name; each split draws different images.
            seed: Base seed; the same seed gives the same images.
            image_size: Image side in pixels.
            max_shapes: Most shapes per image.
            transform: Albumentations pipeline with box params; defaults to ``detection_eval_transform()``.
        """
        self.length = length
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.transform = transform or detection_eval_transform()
        self.cache = SampleCache(length, image_size**2 * 3)

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, boxes and labels of item ``index`` before the transform."""
        rng = np.random.default_rng([self.seed, _SPLIT_IDS.get(self.split, zlib.crc32(self.split.encode())), index])
        return render_detection_sample(rng, self.image_size, self.max_shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, boxes, labels = self.cache.get(index, self.render)
        tensor, target = _apply_boxes(self.transform, image, boxes, labels)
        size = (self.image_size, self.image_size)
        return {
            "image": tensor,
            "target": target,
            "path": f"synthetic/{self.split}/{index:06d}",
            "orig_size": size,
            "valid_size": size,
        }


@register_datamodule
class SyntheticDetectionDataModule(SyntheticDataModule):
    """Circles, rectangles and triangles with their boxes on dark textured backgrounds, made in code.

    Runs offline and trains a tiny ViT detector in minutes. 0 to ``max_shapes`` separate shapes per image, each
    30-50% of the image wide (about one image in ten has none). Labels: 0 = circle, 1 = rectangle,
    2 = triangle (no background class). Training applies random flips; val/test/predict are unaugmented (predict
    reuses the val images). Batches are lists, as for ``CocoDetectionDataModule``.
    """

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 64,
        max_shapes: int = 3,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        """Configure the generator.

        Args:
            num_train: Training images.
            num_val: Validation images (also used for predict).
            num_test: Test images.
            image_size: Image side in pixels.
            max_shapes: Most shapes per image.
            seed: Base seed; splits differ from each other and repeat across runs.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__(num_train, num_val, num_test, image_size, seed, batch_size, num_workers, pin_memory)
        self.max_shapes = max_shapes
        self.num_classes = len(SHAPE_NAMES)
        self.class_names = list(SHAPE_NAMES)

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            transform = A.Compose([*random_flips(), *to_tensor()], bbox_params=bbox_params(1.0))
        else:
            transform = detection_eval_transform()
        return SyntheticDetectionDataset(
            self.split_length(split), split, self.seed, self.image_size, self.max_shapes, transform
        )

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Collect items in lists (as for COCO data, though all synthetic images share one size)."""
        return detection_collate
