"""Semantic segmentation from folders of images and masks: the dataset, its DataModule and ``classes.txt`` reading.

File listing and pairing are in ``vitdense.data.folders``; the synthetic shapes DataModule is in
``vitdense.data.synthetic_datamodules``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdense.data.base import BaseDataModule, Split
from vitdense.data.folders import PredictImageFolder, pair_folders
from vitdense.data.io import image_size, load_image, load_mask
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    apply_transform,
    pad_collate,
    segmentation_eval_transform,
    segmentation_train_transform,
)

LAYOUT = "root/{split}/images/*.png (or .jpg, ...) + root/{split}/masks/*.png with the same file stems"


class SegmentationFolderDataset(Dataset):
    """Image/mask pairs from ``root/{split}/images`` and ``root/{split}/masks``, paired by file stem.

    The folder is validated when the dataset is built; mask values are checked when an item is loaded.
    Items are ``dict(image=(3, H, W) float in [0, 1], mask=(H, W) long, path=str, orig_size=(h, w),
    valid_size=(h, w))`` where ``valid_size`` is the size after the transform.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        ignore_index: int = 255,
        transform: Callable[..., dict[str, Any]] | None = None,
        label_map: np.ndarray | None = None,
    ) -> None:
        """Scan and validate the split folder.

        Args:
            root: Dataset root holding one folder per split.
            split: Split folder name (``train``, ``val``, ``test``).
            num_classes: Number of classes; mask values must lie in ``[0, num_classes)`` or equal ``ignore_index``.
            ignore_index: Mask value of pixels left out of loss and metrics.
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
            label_map: Lookup table applied to each loaded mask (``mask = label_map[mask]``), e.g. dataset ids ->
                train ids; ``None`` keeps the stored values.
        """
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transform = transform or segmentation_eval_transform()
        self.label_map = label_map
        self.samples = self._scan()

    def find_pairs(self) -> list[tuple[Path, Path]]:
        """Return the split's ``(image, mask)`` paths, sorted; subclasses override this to read other layouts."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"Dataset root '{self.root}' does not exist. Expected the layout {LAYOUT}.")
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"Split folder '{split_dir}' not found (folders in root: {found or 'none'}). "
                f"Expected the layout {LAYOUT}."
            )
        image_dir, mask_dir = split_dir / "images", split_dir / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"Folder '{folder}' not found. Expected the layout {LAYOUT}.")
        return pair_folders(image_dir, mask_dir)

    def _scan(self) -> list[tuple[Path, Path]]:
        samples = self.find_pairs()
        mismatched = []
        for image_path, mask_path in samples:
            isize, msize = image_size(image_path), image_size(mask_path)
            if isize != msize:
                mismatched.append(f"'{image_path}' is {isize[0]}x{isize[1]} but '{mask_path}' is {msize[0]}x{msize[1]}")
        if mismatched:
            raise ValueError(
                f"{len(mismatched)} mask(s) differ in size from their image (width x height): "
                f"{'; '.join(mismatched[:5])}. Each mask must have exactly its image's size."
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def class_pixel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: its pixels, and the pixels of the images it appears in (void left out), over the split.

        What median-frequency class weights need (SegNet; ``loss.class_weights: median_frequency``).
        """
        pixels = np.zeros(self.num_classes, np.int64)
        image_pixels = np.zeros(self.num_classes, np.int64)
        for _, mask_path in self.samples:
            mask = load_mask(mask_path)
            if self.label_map is not None:
                mask = self._relabel(mask, mask_path)
            self._check_mask(mask, mask_path)
            labelled = mask[mask != self.ignore_index].astype(np.int64)
            counts = np.bincount(labelled, minlength=self.num_classes)[: self.num_classes]
            pixels += counts
            image_pixels += (counts > 0) * labelled.size
        return pixels, image_pixels

    def _check_mask(self, mask: np.ndarray, path: Path) -> None:
        if mask.min(initial=0) >= 0 and mask.max(initial=0) < self.num_classes:
            return
        bad = np.unique(mask[((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_index)])
        if bad.size:
            values = ", ".join(str(v) for v in bad[:20]) + (", ..." if bad.size > 20 else "")
            raise ValueError(
                f"Mask '{path}' has values [{values}] outside [0, num_classes={self.num_classes}) that are not "
                f"ignore_index={self.ignore_index}. Set num_classes to cover every class id, or set ignore_index "
                "to the value used for void pixels."
            )

    def _relabel(self, mask: np.ndarray, path: Path) -> np.ndarray:
        size = len(self.label_map)  # type: ignore[arg-type]
        if mask.min(initial=0) < 0 or mask.max(initial=0) >= size:
            raise ValueError(
                f"Mask '{path}' has values outside [0, {size}), the ids this dataset's label mapping knows "
                f"(found {int(mask.min())}..{int(mask.max())}). Check the file is an official annotation."
            )
        return self.label_map[mask]  # type: ignore[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.samples[index]
        image, mask = load_image(image_path), load_mask(mask_path)
        if self.label_map is not None:
            mask = self._relabel(mask, mask_path)
        self._check_mask(mask, mask_path)
        out = apply_transform(self.transform, image, mask)
        return {
            "image": out["image"],
            "mask": out["mask"],
            "path": str(image_path),
            "orig_size": tuple(image.shape[:2]),
            "valid_size": tuple(out["image"].shape[-2:]),
        }


def _read_class_names(root: Path, ignore_index: int) -> list[str] | None:
    """Names from ``classes.txt``: one per line, ``name`` or ``<id> <name>``; a line for ignore_index is dropped."""
    path = root / "classes.txt"
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    numbered = [re.match(r"^(\d+)[\s:,]+(.+)$", line) for line in lines]
    if not lines or not all(numbered):
        return lines
    by_id = {int(m.group(1)): m.group(2).strip() for m in numbered}  # type: ignore[union-attr]
    by_id.pop(ignore_index, None)
    ids = sorted(by_id)
    if ids != list(range(len(ids))):
        raise ValueError(
            f"'{path}' numbers its classes {ids}; ids must run 0..K-1 (a line for ignore_index is allowed)."
        )
    return [by_id[i] for i in ids]


@register_datamodule
class SegmentationFolderDataModule(BaseDataModule):
    """Semantic segmentation from ``root/{train,val,test}/images/*`` + ``root/{split}/masks/*.png``.

    Masks are single-channel PNGs of class ids (same stem as their image). An optional ``root/classes.txt``
    gives one class name per line. Train batches are random scale/crop/flip/colour-jittered crops; val/test
    images are optionally resized by their short side and padded per batch (masks with ``ignore_index``).
    """

    # RGB colour of each class when the data defines them (a colour-mask class table), linked into the task for
    # predicted masks; None: vitdense's palette. Only segmentation DataModules have it (the CLI link needs a source).
    class_colors: list[tuple[int, int, int]] | None = None

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        ignore_index: int = 255,
        crop_size: int = 512,
        eval_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        color_jitter: float = 0.2,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        """Read the class names; the folders are scanned in ``setup``.

        Args:
            root: Dataset root with ``train``, ``val`` (and optionally ``test``) folders, each holding
                ``images/`` and ``masks/``.
            num_classes: Number of classes; defaults to the number of lines in ``root/classes.txt``.
            ignore_index: Mask value of void pixels, left out of loss and metrics.
            crop_size: Side of the square training crops.
            eval_size: Short side that val/test/predict images are resized to; ``None`` keeps their size.
            scale_range: Range of the random rescale factor applied before cropping in training.
            color_jitter: Brightness/contrast/saturation jitter of training crops (hue a quarter of it); 0 = off.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
            predict_dir: Folder of images to run ``predict`` on.
            class_names: Class names, used when there is no ``root/classes.txt``; defaults to ``class_<i>``.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root)
        self.ignore_index = ignore_index
        self.crop_size = crop_size
        self.eval_size = eval_size
        self.scale_range = scale_range
        self.color_jitter = color_jitter
        self.predict_dir = predict_dir
        self.num_classes, self.class_names = self._resolve_classes(num_classes, class_names)
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is also a class id (num_classes={self.num_classes}). "
                "Use a value outside [0, num_classes), e.g. 255."
            )

    def _resolve_classes(self, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
        file_names = _read_class_names(self.root, self.ignore_index)
        names = file_names if file_names is not None else class_names
        if num_classes is None:
            if names is None:
                hint = "" if self.root.is_dir() else f" (the root '{self.root}' does not exist either)"
                raise ValueError(
                    f"num_classes is not set and '{self.root / 'classes.txt'}' was not found{hint}. Set "
                    "data.init_args.num_classes, or add classes.txt with one class name per line."
                )
            num_classes = len(names)
        if names is not None and len(names) != num_classes:
            source = f"'{self.root / 'classes.txt'}'" if file_names is not None else "class_names"
            raise ValueError(
                f"{source} lists {len(names)} classes but num_classes={num_classes}. "
                "Make them agree (or leave num_classes unset to take it from the names)."
            )
        return num_classes, list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]

    @property
    def input_size(self) -> int:
        return self.crop_size

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: set data.init_args.predict_dir (--data.predict_dir)."
                )
            return PredictImageFolder(self.predict_dir, segmentation_eval_transform(self.eval_size))
        if split == "train":
            transform = segmentation_train_transform(
                self.crop_size, self.ignore_index, self.scale_range, self.color_jitter
            )
        else:
            transform = segmentation_eval_transform(self.eval_size)
        return self._labelled_dataset(split, transform)

    def _labelled_dataset(self, split: Split, transform: Callable[..., dict[str, Any]]) -> Dataset:
        """The dataset of a split with masks; DataModules of other folder layouts override this."""
        return SegmentationFolderDataset(self.root, split, self.num_classes, self.ignore_index, transform)

    def class_pixel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, its pixels and those of the images it appears in, over the training masks (one pass)."""
        return self.dataset("train").class_pixel_counts()  # type: ignore[attr-defined]

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Pad each batch to its largest image (masks padded with ``ignore_index``)."""
        return partial(pad_collate, ignore_index=self.ignore_index)
