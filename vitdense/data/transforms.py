"""Albumentations presets for segmentation, classification and detection, and the collate functions of batches.

Pipelines take an ``(H, W, 3)`` uint8 image (and an ``(H, W)`` integer mask, or ``xyxy`` boxes with their labels)
and return a float32 ``(3, H, W)`` image in [0, 1] (and an int64 ``(H, W)`` mask). They do not normalise: the model
applies its backbone's mean/std. Masks are always resampled with nearest-neighbour.

Detection boxes are ``xyxy`` float pixels of the transformed image. Detection eval transforms are pure resizes (no
crop or pad), so a model maps its boxes back to the original image by scaling x by ``orig_w / valid_w`` and y by
``orig_h / valid_h``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torchvision.transforms import v2


def _mask_to_int64(mask: np.ndarray, **_: Any) -> np.ndarray:
    return mask.astype(np.int64)


def seed_transform(transform: Any) -> None:
    """Seed an albumentations pipeline from torch's seed of this process or DataLoader worker, once per seed.

    albumentations draws from a generator of its own that ``seed_everything`` does not reach, so without this two
    runs with the same seed would see different crops, flips and colours. Lightning's seeding gives each worker its
    own torch seed, so workers still differ from each other.
    """
    seed = torch.initial_seed()
    if hasattr(transform, "set_random_seed") and getattr(transform, "_vitdense_seed", None) != seed:
        transform.set_random_seed(seed % 2**32)
        transform._vitdense_seed = seed


def apply_transform(
    transform: Callable[..., dict[str, Any]], image: np.ndarray, mask: np.ndarray | None = None
) -> dict:
    """Seed ``transform`` (see ``seed_transform``) and run it on an image and, when given, its mask."""
    seed_transform(transform)
    if mask is None:
        return transform(image=image)
    # int32: cv2 cannot resample int64 and uint8 cannot hold every class id / ignore_index
    return transform(image=image, mask=mask.astype(np.int32))


def to_tensor() -> list[A.BasicTransform]:
    """Final steps of every preset: uint8 HWC image -> float CHW in [0, 1], mask -> int64 tensor."""
    return [A.ToFloat(max_value=255.0), A.Lambda(mask=_mask_to_int64, name="mask_to_int64"), ToTensorV2()]


def random_flips() -> list[A.BasicTransform]:
    """Horizontal and vertical flips: the augmentation of the synthetic sets, whose shapes have no up or left."""
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def segmentation_train_transform(
    crop_size: int, ignore_index: int, scale_range: tuple[float, float] = (0.5, 2.0), color_jitter: float = 0.2
) -> A.Compose:
    """Random scale, pad, random crop, horizontal flip and colour jitter.

    Args:
        crop_size: Side of the square training crop.
        ignore_index: Mask value written where the crop extends past the image.
        scale_range: Range of the random rescale factor.
        color_jitter: Strength of the brightness, contrast and saturation jitter (hue a quarter of it), applied
            to 80% of the crops; 0 turns photometric augmentation off.
    """
    low, high = scale_range
    if color_jitter < 0:
        raise ValueError(f"color_jitter={color_jitter} must be >= 0 (0 turns colour jitter off).")
    photometric = (
        [A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                       hue=min(color_jitter / 4, 0.5), p=0.8)]
        if color_jitter > 0 else []
    )  # fmt: skip
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
            *photometric,
            *to_tensor(),
        ]
    )


def crop_exceeds_images(crop_size: int, sizes: Sequence[tuple[int, int]], where: str = "") -> str | None:
    """What to say when ``crop_size`` is larger than every image of ``sizes`` (``(width, height)`` of the training
    images, those of the folder ``where`` if given): each crop of ``segmentation_train_transform`` is then mostly
    padding, compute spent on nothing; ``None`` when the crop fits some image."""
    if not sizes or crop_size <= max(max(size) for size in sizes):
        return None
    small, large = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
    spread = f"all {small[0]}x{small[1]}" if small == large else f"{small[0]}x{small[1]} to {large[0]}x{large[1]}"
    padding = 1 - large[0] * large[1] / crop_size**2
    return (
        f"data.crop_size is {crop_size}, larger than every training image{f' of {where}' if where else ''} "
        f"({spread}, w x h): at scale 1 "
        f"at least {padding:.0%} of each {crop_size}x{crop_size} crop is padding, and the compute grows with the "
        f"crop's area. Set data.crop_size to at most {max(max(size) for size in sizes)} (the largest image side)."
    )


class SegmentationEvalTransform:
    """Resize the image's short side to ``size`` (or keep it); the mask keeps its original resolution.

    Predictions are resized back to the mask and scored there (as mmseg does), so an ``eval_size`` changes what
    the model sees, never what it is scored against.

    Args:
        size: Target short side of the image in pixels; ``None`` keeps the original size.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        resize = [] if size is None else [A.SmallestMaxSize(max_size=size)]
        self.image_transform = A.Compose([*resize, A.ToFloat(max_value=255.0), ToTensorV2()])

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        out = self.image_transform(image=image)
        if mask is not None:
            out["mask"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))
        return out


def segmentation_eval_transform(size: int | None = None) -> SegmentationEvalTransform:
    """The val/test/predict transform: image short side resized to ``size`` (or kept), mask at full resolution.

    Args:
        size: Target short side in pixels; ``None`` keeps the original size.
    """
    return SegmentationEvalTransform(size)


EVAL_CROP_RATIO = 0.875  # eval resizes the short side to image_size / 0.875, then centre-crops (the timm default)


class RandAugment:
    """torchvision's ``RandAugment`` on an ``(H, W, 3)`` uint8 array (albumentations has none); use in ``A.Lambda``."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9) -> None:
        """Configure the policy.

        Args:
            num_ops: Operations applied in a row.
            magnitude: Strength of every operation (0-30).
        """
        self.transform = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    def __call__(self, image: np.ndarray, **_: Any) -> np.ndarray:
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return self.transform(chw).permute(1, 2, 0).numpy()


def classification_train_transform(
    image_size: int, scale: tuple[float, float] = (0.08, 1.0), randaugment: bool = False
) -> A.Compose:
    """Random resized crop and horizontal flip, optionally followed by RandAugment.

    RandAugment is torchvision's (``transforms.v2.RandAugment``, 2 ops at magnitude 9), run on the uint8 crop
    before it is turned into a float tensor.

    Args:
        image_size: Side of the square crop.
        scale: Range of the crop's area as a fraction of the image's.
        randaugment: Add RandAugment.
    """
    extra = [A.Lambda(image=RandAugment(), name="randaugment", p=1.0)] if randaugment else []
    return A.Compose(
        [
            A.RandomResizedCrop(size=(image_size, image_size), scale=scale),
            A.HorizontalFlip(p=0.5),
            *extra,
            *to_tensor(),
        ]
    )


def classification_eval_transform(image_size: int) -> A.Compose:
    """Resize the short side to ``int(image_size / 0.875)``, then centre-crop ``image_size`` x ``image_size``.

    Args:
        image_size: Side of the square crop.
    """
    return A.Compose(
        [
            A.SmallestMaxSize(max_size=int(image_size / EVAL_CROP_RATIO)),
            A.CenterCrop(height=image_size, width=image_size),
            *to_tensor(),
        ]
    )


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


def apply_box_transform(
    transform: Callable[..., dict[str, Any]], image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
):
    """Run an albumentations pipeline on an image and its boxes; return ``(image, target)``."""
    seed_transform(transform)
    out = transform(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
    target = {
        "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
    }
    return out["image"], target


def apply_instance_transform(
    transform: Callable[..., dict[str, Any]],
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray,
):
    """Run an albumentations pipeline on an image, its boxes and one mask per box; return ``(image, target)`` with
    ``masks`` (N, H, W) uint8. A box the pipeline drops takes its mask with it (the instances travel as the
    pipeline's labels, so masks and boxes stay paired)."""
    seed_transform(transform)
    out = transform(image=image, bboxes=boxes.reshape(-1, 4), labels=np.arange(len(labels)), masks=list(masks))
    kept = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    height, width = out["image"].shape[-2:]
    stacked = [torch.as_tensor(np.asarray(m)).reshape(height, width) for m in out["masks"]]
    all_masks = torch.stack(stacked) if stacked else torch.zeros((0, height, width))
    target = {
        "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)[kept]),
        "masks": all_masks[torch.as_tensor(kept)].to(torch.uint8),
    }
    return out["image"], target


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def _pad_stack(tensors: list[torch.Tensor], value: float, size_divisor: int) -> torch.Tensor:
    height = _round_up(max(t.shape[-2] for t in tensors), size_divisor)
    width = _round_up(max(t.shape[-1] for t in tensors), size_divisor)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], height, width), value)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def pad_collate(batch: Sequence[dict[str, Any]], ignore_index: int, size_divisor: int = 32) -> dict[str, Any]:
    """Pad images (with 0) and masks (with ``ignore_index``) at the bottom/right and stack them.

    Images are padded to the largest image and masks to the largest mask (they differ when val images are
    resized and masks are not), both rounded up to ``size_divisor``. ``valid_size`` and ``mask_size`` record each
    item's own sizes, so a model can run each image at its size and score it at its mask's.

    Args:
        batch: Items with an ``image`` ``(3, h, w)`` float tensor, optionally a ``mask`` ``(h, w)`` tensor and
            any other keys.
        ignore_index: Mask value of padded pixels.
        size_divisor: Padded height and width are multiples of this.

    Returns:
        ``{"image": (B, 3, H, W) float, "valid_size": [(h, w), ...], "mask": (B, H', W') long, "mask_size":
        [(h', w'), ...]}`` (masks only when items have one); other tensors of equal shape are stacked, everything
        else (``path``, ``orig_size``, ...) is collected in lists.
    """
    out: dict[str, Any] = {
        "image": _pad_stack([item["image"] for item in batch], 0.0, size_divisor),
        "valid_size": [tuple(item["image"].shape[-2:]) for item in batch],
    }
    if "mask" in batch[0]:
        out["mask"] = _pad_stack([item["mask"].long() for item in batch], ignore_index, size_divisor)
        out["mask_size"] = [tuple(item["mask"].shape[-2:]) for item in batch]
    for key in batch[0]:
        if key in out:
            continue
        values = [item[key] for item in batch]
        same_shape = all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values)
        out[key] = torch.stack(values) if same_shape else values
    return out


def detection_collate(batch: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Collect every key of the items in lists: images may differ in size, so nothing is stacked or padded.

    Returns:
        ``{"image": [(3, h, w), ...], "target": [{"boxes", "labels"}, ...], "path": [...], "orig_size": [...],
        "valid_size": [...]}`` (``target`` only when the items have one).
    """
    return {key: [item[key] for item in batch] for key in batch[0]}
