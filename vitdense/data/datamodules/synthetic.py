"""Synthetic datasets and DataModules, made in code: segmentation, classification and detection of shapes.

Item ``i`` of a split is a pure function of ``(seed, split, i)`` (``data.datasets.synthetic.split_rng``), rendered on
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

from vitdense.data.datamodules.base import SampleCache, Split, SyntheticDataModule
from vitdense.data.datasets.synthetic import (
    SHAPE_CLASSES,
    SHAPE_NAMES,
    dark_background,
    paint,
    render_detection_sample,
    render_shapes,
    shape_coverage,
    split_rng,
)
from vitdense.data.registry import register_datamodule
from vitdense.data.transforms import (
    apply_box_transform,
    apply_instance_transform,
    apply_transform,
    bbox_params,
    detection_collate,
    detection_eval_transform,
    pad_collate,
    random_flips,
    segmentation_eval_transform,
    to_tensor,
)


class GeneratedDataset(Dataset):
    """Base of the synthetic datasets: item ``i`` of a split is a pure function of ``(seed, split, i)``, rendered
    by ``render`` on first access and kept (for sets up to 256 MiB)."""

    BYTES_PER_PIXEL = 3  # what one rendered item keeps per pixel (image, plus mask where there is one)

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
            transform: Albumentations pipeline; defaults to the subclass's unaugmented preset.
        """
        self.length = length
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.transform = transform or self.default_transform()
        self.cache = SampleCache(length, image_size**2 * self.BYTES_PER_PIXEL)

    def default_transform(self) -> Callable[..., dict[str, Any]]:
        """The pipeline used when none is given."""
        return A.Compose(to_tensor())

    def render(self, index: int) -> Any:
        """Item ``index`` before the transform (uint8 image, and its mask or boxes)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Any:
        """The rendered item ``index`` (from the cache after its first access)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.cache.get(index, self.render)

    def item_info(self, index: int) -> dict[str, Any]:
        """Path-like name and sizes of item ``index`` (the images are never resized)."""
        size = (self.image_size, self.image_size)
        return {"path": f"synthetic/{self.split}/{index:06d}", "orig_size": size, "valid_size": size}


class MultiShapeDataset(GeneratedDataset):
    """A generated dataset with up to ``max_shapes`` shapes per image."""

    def __init__(self, length: int, split: str, max_shapes: int = 3, **kwargs: Any) -> None:
        """Set up the generator; every other argument is ``GeneratedDataset``'s (seed, image_size, transform).

        Args:
            length: Number of items.
            split: Split name; each split draws different images.
            max_shapes: Most shapes per image.
        """
        self.max_shapes = max_shapes
        super().__init__(length, split, **kwargs)


class SyntheticShapesDataset(MultiShapeDataset):
    """Random shapes on textured backgrounds, with their class mask; item ``i`` of a split is always the same."""

    BYTES_PER_PIXEL = 4

    def default_transform(self) -> Callable[..., dict[str, Any]]:
        return segmentation_eval_transform()

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of item ``index`` before the transform."""
        return render_shapes(split_rng(self.seed, self.split, index), self.image_size, self.max_shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.sample(index)
        out = apply_transform(self.transform, image, mask)
        return {"image": out["image"], "mask": out["mask"], **self.item_info(index)}


class SyntheticClassificationDataset(GeneratedDataset):
    """One large light shape on a darkened textured background per image; item ``i`` of a split is always the same.

    Shapes are roughly centred and span 55-80% of the image (never cut by its border: half a circle looks like a
    rectangle). Labels cycle through ``SHAPE_NAMES`` (``index % 3``), so every split is balanced.
    """

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
        out = apply_transform(self.transform, self.sample(index))
        label = index % len(SHAPE_NAMES)
        return {
            "image": out["image"],
            "label": torch.tensor(label, dtype=torch.long),
            "path": self.item_info(index)["path"],
        }


class SyntheticDetectionDataset(MultiShapeDataset):
    """Separate shapes with their boxes (no mask); item ``i`` of a split is always the same."""

    def default_transform(self) -> Callable[..., dict[str, Any]]:
        return detection_eval_transform()

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, boxes and labels of item ``index`` before the transform."""
        image, boxes, labels = render_detection_sample(split_rng(self.seed, self.split, index), self.image_size,
                                                       self.max_shapes)  # fmt: skip
        return image, boxes, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, boxes, labels = self.sample(index)
        tensor, target = apply_box_transform(self.transform, image, boxes, labels)
        return {"image": tensor, "target": target, **self.item_info(index)}


@register_datamodule
class SyntheticSegmentationDataModule(SyntheticDataModule):
    """Circles, rectangles and triangles on textured backgrounds, made in code: runs offline, trains in minutes.

    Classes: ``background``, ``circle``, ``rectangle``, ``triangle``. Shapes have random flat colours and may
    overlap. Training applies random flips; val/test/predict are unaugmented (predict reuses the val images).
    """

    def __init__(self, num_train: int = 1024, max_shapes: int = 3, ignore_index: int = 255, **kwargs: Any) -> None:
        """Configure the generator; every other argument is ``SyntheticDataModule``'s (num_val, image_size, ...).

        Args:
            num_train: Training images.
            max_shapes: Most shapes per image.
            ignore_index: Mask value of padded pixels (the generator itself never writes it).
        """
        super().__init__(num_train=num_train, **kwargs)
        self.max_shapes = max_shapes
        self.ignore_index = ignore_index
        self.num_classes = len(SHAPE_CLASSES)
        self.class_names = list(SHAPE_CLASSES)

    def _make_dataset(self, split: Split) -> Dataset:
        transform = A.Compose([*random_flips(), *to_tensor()]) if split == "train" else segmentation_eval_transform()
        return SyntheticShapesDataset(
            self.split_length(split), split, self.max_shapes, seed=self.seed, image_size=self.image_size,
            transform=transform,
        )  # fmt: skip

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Stack the batch (all images share one size, so nothing is padded)."""
        return partial(pad_collate, ignore_index=self.ignore_index, size_divisor=1)


@register_datamodule
class SyntheticClassificationDataModule(SyntheticDataModule):
    """Which shape is in the image: a light circle, rectangle or triangle on a dark textured background, made in code.

    Runs offline and trains a tiny ViT in minutes. Training applies random flips; val/test/predict are
    unaugmented (predict reuses the val images). Batches are as for ``ImageFolderDataModule``.
    """

    def __init__(self, num_val: int = 128, num_test: int = 128, batch_size: int = 32, **kwargs: Any) -> None:
        """Configure the generator; every other argument is ``SyntheticDataModule``'s (num_train, image_size, ...).

        Args:
            num_val: Validation images (also used for predict).
            num_test: Test images.
            batch_size: Samples per batch (per device).
        """
        super().__init__(num_val=num_val, num_test=num_test, batch_size=batch_size, **kwargs)
        self.num_classes = len(SHAPE_NAMES)
        self.class_names = list(SHAPE_NAMES)

    def _make_dataset(self, split: Split) -> Dataset:
        transform = A.Compose([*random_flips(), *to_tensor()]) if split == "train" else A.Compose(to_tensor())
        return SyntheticClassificationDataset(
            self.split_length(split), split, seed=self.seed, image_size=self.image_size, transform=transform
        )


@register_datamodule
class SyntheticDetectionDataModule(SyntheticDataModule):
    """Circles, rectangles and triangles with their boxes on dark textured backgrounds, made in code.

    Runs offline and trains a tiny ViT detector in minutes. 0 to ``max_shapes`` separate shapes per image, each
    30-50% of the image wide (about one image in ten has none). Labels: 0 = circle, 1 = rectangle,
    2 = triangle (no background class). Training applies random flips; val/test/predict are unaugmented (predict
    reuses the val images). Batches are lists, as for ``CocoDetectionDataModule``.
    """

    def __init__(self, max_shapes: int = 3, **kwargs: Any) -> None:
        """Configure the generator; every other argument is ``SyntheticDataModule``'s (num_train, image_size, ...).

        Args:
            max_shapes: Most shapes per image.
        """
        super().__init__(**kwargs)
        self.max_shapes = max_shapes
        self.num_classes = len(SHAPE_NAMES)
        self.class_names = list(SHAPE_NAMES)

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            transform = A.Compose([*random_flips(), *to_tensor()], bbox_params=bbox_params(1.0))
        else:
            transform = detection_eval_transform()
        return SyntheticDetectionDataset(
            self.split_length(split), split, self.max_shapes, seed=self.seed, image_size=self.image_size,
            transform=transform,
        )  # fmt: skip

    def get_collate_fn(self, split: Split) -> Callable[[list[Any]], Any]:
        """Collect items in lists (as for COCO data, though all synthetic images share one size)."""
        return detection_collate


class SyntheticInstanceDataset(MultiShapeDataset):
    """The detection set's shapes with a mask per shape (instance segmentation); item ``i`` is always the same, and
    its image and boxes are those of ``SyntheticDetectionDataset`` item ``i``."""

    BYTES_PER_PIXEL = 3 + 3  # image, and up to three instance masks

    def default_transform(self) -> Callable[..., dict[str, Any]]:
        return detection_eval_transform()

    def render(self, index: int) -> tuple[np.ndarray, ...]:
        """Image, boxes, labels and masks of item ``index`` before the transform."""
        rng = split_rng(self.seed, self.split, index)
        return render_detection_sample(rng, self.image_size, self.max_shapes, masks=True)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, boxes, labels, masks = self.sample(index)
        tensor, target = apply_instance_transform(self.transform, image, boxes, labels, masks)
        return {"image": tensor, "target": target, **self.item_info(index)}


@register_datamodule
class SyntheticInstanceDataModule(SyntheticDetectionDataModule):
    """Circles, rectangles and triangles with their boxes and masks, made in code: the detection set with a mask
    per shape, for instance segmentation (``InstanceSegmentationTask``). Targets hold ``boxes``, ``labels`` and
    ``masks`` (N, H, W) uint8."""

    def _make_dataset(self, split: Split) -> Dataset:
        if split == "train":
            transform = A.Compose([*random_flips(), *to_tensor()], bbox_params=bbox_params(1.0))
        else:
            transform = detection_eval_transform()
        return SyntheticInstanceDataset(
            self.split_length(split), split, self.max_shapes, seed=self.seed, image_size=self.image_size,
            transform=transform,
        )  # fmt: skip
