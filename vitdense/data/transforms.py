"""Albumentations presets for segmentation and the collate function that pads a batch to one size.

Pipelines take an ``(H, W, 3)`` uint8 image and an ``(H, W)`` integer mask and return a float32 ``(3, H, W)``
image in [0, 1] and an int64 ``(H, W)`` mask. They do not normalise: the model applies its backbone's mean/std.
Masks are always resampled with nearest-neighbour.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates on import

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2


def _mask_to_int64(mask: np.ndarray, **_: Any) -> np.ndarray:
    return mask.astype(np.int64)


def to_tensor() -> list[A.BasicTransform]:
    """Final steps of every preset: uint8 HWC image -> float CHW in [0, 1], mask -> int64 tensor."""
    return [A.ToFloat(max_value=255.0), A.Lambda(mask=_mask_to_int64, name="mask_to_int64"), ToTensorV2()]


def random_flips() -> list[A.BasicTransform]:
    """Horizontal and vertical flips: the augmentation of the synthetic sets, whose shapes have no up or left."""
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def segmentation_train_transform(
    crop_size: int, ignore_index: int, scale_range: tuple[float, float] = (0.5, 2.0)
) -> A.Compose:
    """Random scale, pad, random crop, horizontal flip and colour jitter.

    Args:
        crop_size: Side of the square training crop.
        ignore_index: Mask value written where the crop extends past the image.
        scale_range: Range of the random rescale factor.
    """
    low, high = scale_range
    return A.Compose(
        [
            A.RandomScale(scale_limit=(low - 1.0, high - 1.0), mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.PadIfNeeded(
                min_height=crop_size,
                min_width=crop_size,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=ignore_index,
            ),
            A.RandomCrop(height=crop_size, width=crop_size),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.8),
            *to_tensor(),
        ]
    )


def segmentation_eval_transform(size: int | None = None) -> A.Compose:
    """Resize so the short side equals ``size`` (keeping the aspect ratio), or keep the image as is.

    Args:
        size: Target short side in pixels; ``None`` keeps the original size.
    """
    resize = [] if size is None else [A.SmallestMaxSize(max_size=size, mask_interpolation=cv2.INTER_NEAREST)]
    return A.Compose([*resize, *to_tensor()])


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def pad_collate(batch: Sequence[dict[str, Any]], ignore_index: int, size_divisor: int = 32) -> dict[str, Any]:
    """Pad images (with 0) and masks (with ``ignore_index``) at the bottom/right and stack them.

    The batch size is the largest height and width in the batch, rounded up to ``size_divisor``.

    Args:
        batch: Items with an ``image`` ``(3, h, w)`` float tensor, optionally a ``mask`` ``(h, w)`` tensor and
            any other keys.
        ignore_index: Mask value of padded pixels.
        size_divisor: Padded height and width are multiples of this.

    Returns:
        ``{"image": (B, 3, H, W) float, "mask": (B, H, W) long}`` (``mask`` only when items have one); other
        tensors of equal shape are stacked, everything else (``path``, ``orig_size``, ...) is collected in lists.
    """
    height = _round_up(max(item["image"].shape[-2] for item in batch), size_divisor)
    width = _round_up(max(item["image"].shape[-1] for item in batch), size_divisor)
    images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], height, width))
    for i, item in enumerate(batch):
        h, w = item["image"].shape[-2:]
        images[i, :, :h, :w] = item["image"]
    out: dict[str, Any] = {"image": images}
    if "mask" in batch[0]:
        masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.long)
        for i, item in enumerate(batch):
            h, w = item["mask"].shape[-2:]
            masks[i, :h, :w] = item["mask"]
        out["mask"] = masks
    for key in batch[0]:
        if key in out:
            continue
        values = [item[key] for item in batch]
        same_shape = all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values)
        out[key] = torch.stack(values) if same_shape else values
    return out
