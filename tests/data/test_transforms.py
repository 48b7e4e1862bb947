"""Transform presets and collates: masks kept nearest and at full size, padded batches, boxes inside the crop."""

import numpy as np
import pytest
import torch

from vitdense.data import detection_collate
from vitdense.data.transforms import (
    classification_train_transform,
    detection_train_transform,
    pad_collate,
    segmentation_eval_transform,
    segmentation_train_transform,
)


def test_pad_collate_size_divisor_and_extra_keys() -> None:
    batch = [
        {"image": torch.ones(3, 10, 7), "mask": torch.zeros(10, 7, dtype=torch.long), "path": "a"},
        {"image": torch.ones(3, 5, 12), "mask": torch.ones(5, 12, dtype=torch.long), "path": "b"},
    ]
    out = pad_collate(batch, ignore_index=-1, size_divisor=8)
    assert out["image"].shape == (2, 3, 16, 16) and out["mask"].shape == (2, 16, 16)
    assert out["valid_size"] == [(10, 7), (5, 12)] and out["mask_size"] == [(10, 7), (5, 12)]
    batch[1]["mask"] = torch.ones(20, 24, dtype=torch.long)  # a val mask larger than its resized image
    out = pad_collate(batch, ignore_index=-1, size_divisor=8)
    assert out["image"].shape == (2, 3, 16, 16) and out["mask"].shape == (2, 24, 24)
    assert out["mask"][0, :10, :7].eq(0).all() and out["mask"][0, 10:].eq(-1).all()
    assert out["image"][1, :, 5:].eq(0).all() and out["path"] == ["a", "b"]


def test_transforms_keep_masks_nearest() -> None:
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = np.random.default_rng(1).choice(np.array([0, 1, 7, 255]), size=(37, 53))
    out = segmentation_eval_transform(20)(image=image, mask=mask.astype(np.int32))
    assert out["image"].shape == (3, 20, 29) and out["mask"].dtype == torch.int64
    assert np.array_equal(out["mask"].numpy(), mask)  # scored at full resolution: the mask is never resized
    out = segmentation_train_transform(48, ignore_index=255)(image=image, mask=mask.astype(np.int32))
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
    assert set(out["mask"].unique().tolist()) <= {0, 1, 7, 255}


def test_color_jitter_zero_keeps_the_crop_colours() -> None:
    from vitdense.data.transforms import segmentation_train_transform

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (32, 32), dtype=np.uint8)
    plain = segmentation_train_transform(32, 255, scale_range=(1.0, 1.0), color_jitter=0.0)
    jittered = segmentation_train_transform(32, 255, scale_range=(1.0, 1.0), color_jitter=0.4)
    seen_plain = {tuple(sorted(plain(image=image, mask=mask)["image"].flatten().tolist())) for _ in range(8)}
    seen_jitter = {tuple(sorted(jittered(image=image, mask=mask)["image"].flatten().tolist())) for _ in range(8)}
    assert len(seen_plain) == 1  # flips move pixels, never change their values
    assert len(seen_jitter) > 1
    with pytest.raises(ValueError, match="color_jitter"):
        segmentation_train_transform(32, 255, color_jitter=-0.1)


def test_randaugment_keeps_the_item_format() -> None:
    transform = classification_train_transform(24, scale=(0.5, 1.0), randaugment=True)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = transform(image=image)["image"]
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_train_transform_makes_squares_with_boxes_inside() -> None:
    transform = detection_train_transform(32, scale_range=(0.5, 2.0))
    image = np.zeros((20, 40, 3), np.uint8)
    for _ in range(10):
        out = transform(image=image, bboxes=np.array([[4.0, 2.0, 14.0, 8.0]]), labels=np.array([1]))
        assert out["image"].shape == (3, 32, 32)
        assert all(0 <= v <= 32 for box in out["bboxes"] for v in box) and len(out["bboxes"]) == len(out["labels"])


def test_detection_collate_keeps_lists() -> None:
    items = [{"image": torch.zeros(3, 4, 5), "path": "a"}, {"image": torch.zeros(3, 6, 2), "path": "b"}]
    batch = detection_collate(items)
    assert batch["path"] == ["a", "b"] and [t.shape[-1] for t in batch["image"]] == [5, 2]
