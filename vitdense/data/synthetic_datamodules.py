"""Synthetic datasets and DataModules, made in code: segmentation, classification and detection of shapes.

Item ``i`` of a split is a pure function of ``(seed, split, i)`` (``vitdense.data.synthetic.split_rng``), rendered on
first access and kept (for sets up to 256 MiB). They run offline and train a tiny ViT in minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from vitdense.data.base import SampleCache, Split, SyntheticDataModule
from vitdense.data.registry import register_datamodule
from vitdense.data.synthetic import (
    SHAPE_CLASSES,
    SHAPE_NAMES,
    dark_background,
    paint,
    render_detection_sample,
    render_shapes,
    shape_coverage,
    split_rng,
)
from vitdense.data.transforms import (
    apply_box_transform,
    apply_transform,
    bbox_params,
    detection_collate,
    detection_eval_transform,
    pad_collate,
    random_flips,
    segmentation_eval_transform,
    to_tensor,
)


class SyntheticShapesDataset(Dataset):
    """Random shapes on textured backgrounds, generated on first access (and kept, for sets up to 256 MiB); item
    ``i`` of a split is always the same."""

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
            transform: Albumentations pipeline; defaults to ``segmentation_eval_transform()``.
        """
        self.length = length
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.transform = transform or segmentation_eval_transform()
        self.cache = SampleCache(length, image_size**2 * 4)

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of item ``index`` before the transform."""
        rng = split_rng(self.seed, self.split, index)
        return render_shapes(rng, self.image_size, self.max_shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, mask = self.cache.get(index, self.render)
        out = apply_transform(self.transform, image, mask)
        size = (self.image_size, self.image_size)
        return {
            "image": out["image"],
            "mask": out["mask"],
            "path": f"synthetic/{self.split}/{index:06d}",
            "orig_size": size,
            "valid_size": size,
        }


@register_datamodule
class SyntheticSegmentationDataModule(SyntheticDataModule):
    """Circles, rectangles and triangles on textured backgrounds, made in code: runs offline, trains in minutes.

    Classes: ``background``, ``circle``, ``rectangle``, ``triangle``. Shapes have random flat colours and may
    overlap. Training applies random flips; val/test/predict are unaugmented (predict reuses the val images).
    """

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 64,
        num_test: int = 64,
        image_size: int = 64,
        max_shapes: int = 3,
        seed: int = 0,
        ignore_index: int = 255,
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
            ignore_index: Mask value of padded pixels (the generator itself never writes it).
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__(num_train, num_val, num_test, image_size, seed, batch_size, num_workers, pin_memory)
        self.max_shapes = max_shapes
        self.ignore_index = ignore_index
        self.num_classes = len(SHAPE_CLASSES)
        self.class_names = list(SHAPE_CLASSES)

    def _make_dataset(self, split: Split) -> Dataset:
        transform = A.Compose([*random_flips(), *to_tensor()]) if split == "train" else segmentation_eval_transform()
        return SyntheticShapesDataset(
            self.split_length(split), split, self.seed, self.image_size, self.max_shapes, transform
        )

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Stack the batch (all images share one size, so nothing is padded)."""
        return partial(pad_collate, ignore_index=self.ignore_index, size_divisor=1)


class SyntheticClassificationDataset(Dataset):
    """One large light shape on a darkened textured background per image; item ``i`` of a split is always the same.

    Shapes are roughly centred and span 55-80% of the image (never cut by its border: half a circle looks like a
    rectangle). Labels cycle through ``SHAPE_NAMES`` (``index % 3``), so every split is balanced.
    """

    def __init__(
        self,
        length: int,
        split: str,
        seed: int = 0,
        image_size: int = 64,
        transform: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        """Set up the generator.

        Args:
            length: Number of items.
            split: Split name; each split draws different images.
            seed: Base seed; the same seed gives the same images.
            image_size: Image side in pixels.
            transform: Albumentations pipeline; defaults to converting to a tensor.
        """
        self.length = length
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.transform = transform or A.Compose(to_tensor())
        self.cache = SampleCache(length, image_size**2 * 3)

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> np.ndarray:
        """The uint8 image of item ``index`` before the transform: a light shape on a darkened background (with
        both colours random, telling shape from background is itself a relation a small ViT learns slowly from 512
        images; colour carries no class information)."""
        rng = split_rng(self.seed, self.split, index)
        image = dark_background(rng, self.image_size)
        centre = (0.5 + rng.uniform(-0.06, 0.06, size=2)) * self.image_size
        extent = rng.uniform(0.28, 0.4) * self.image_size
        label = index % len(SHAPE_NAMES)
        image = paint(image, shape_coverage(rng, label, (centre[0], centre[1]), extent, self.image_size), rng)
        return np.round(image).astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        label = index % len(SHAPE_NAMES)
        out = apply_transform(self.transform, self.cache.get(index, self.render))
        return {
            "image": out["image"],
            "label": torch.tensor(label, dtype=torch.long),
            "path": f"synthetic/{self.split}/{index:06d}",
        }


@register_datamodule
class SyntheticClassificationDataModule(SyntheticDataModule):
    """Which shape is in the image: a light circle, rectangle or triangle on a dark textured background, made in code.

    Runs offline and trains a tiny ViT in minutes. Training applies random flips; val/test/predict are
    unaugmented (predict reuses the val images). Batches are as for ``ImageFolderDataModule``.
    """

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        image_size: int = 64,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        """Configure the generator.

        Args:
            num_train: Training images.
            num_val: Validation images (also used for predict).
            num_test: Test images.
            image_size: Image side in pixels.
            seed: Base seed; splits differ from each other and repeat across runs.
            batch_size: Samples per batch (per device).
            num_workers: DataLoader worker processes (0 loads in the main process).
            pin_memory: Pin batches in page-locked memory for faster host-to-GPU copies.
        """
        super().__init__(num_train, num_val, num_test, image_size, seed, batch_size, num_workers, pin_memory)
        self.num_classes = len(SHAPE_NAMES)
        self.class_names = list(SHAPE_NAMES)

    def _make_dataset(self, split: Split) -> Dataset:
        transform = A.Compose([*random_flips(), *to_tensor()]) if split == "train" else A.Compose(to_tensor())
        return SyntheticClassificationDataset(self.split_length(split), split, self.seed, self.image_size, transform)


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
        rng = split_rng(self.seed, self.split, index)
        return render_detection_sample(rng, self.image_size, self.max_shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, boxes, labels = self.cache.get(index, self.render)
        tensor, target = apply_box_transform(self.transform, image, boxes, labels)
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
