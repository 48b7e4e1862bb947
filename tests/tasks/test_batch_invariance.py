"""An image's val/test/predict result never depends on the other images in its batch; scores use the full-size mask."""

import numpy as np
import pytest
import torch

from tests.tiny import SWIN_W16, VIT_D2_W32
from vitdense import DetectionTask, SegmentationTask
from vitdense.data.transforms import pad_collate, segmentation_eval_transform

SIZES = [(96, 128), (224, 224), (96, 128), (70, 90)]


def _items(with_mask: bool = True) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i, (h, w) in enumerate(SIZES):
        item = {"image": torch.rand(3, h, w, generator=g), "path": f"img{i}", "orig_size": (h, w)}
        if with_mask:
            item["mask"] = torch.randint(0, 3, (h, w), generator=g)
        items.append(item)
    return items


@pytest.mark.parametrize("backbone", [VIT_D2_W32, SWIN_W16], ids=["vit", "swin"])
def test_segmentation_result_does_not_depend_on_the_batch(backbone: dict) -> None:
    task = SegmentationTask(backbone=backbone, num_classes=3, head={"channels": 16}).eval()
    items = _items()
    batch = pad_collate(items, ignore_index=255)
    with torch.no_grad():
        groups = task.logits_per_size(batch["image"], batch["valid_size"], batch["orig_size"])
        together = {i: logits[k] for idx, logits in groups for k, i in enumerate(idx)}
        for i, item in enumerate(items):
            alone = pad_collate([item], ignore_index=255)
            ((_, logits),) = task.logits_per_size(alone["image"], alone["valid_size"], alone["orig_size"])
            assert (logits[0] - together[i]).abs().max() <= 1e-4, f"image {i} {SIZES[i]}"
        # predict and the val/test confusion matrix go through the same per-size path
        preds = task.predict_step(batch, 0)
        assert [p["mask"].shape for p in preds] == [torch.Size(s) for s in SIZES]
        metric = task.metrics["val"]
        task.shared_step(batch, "val")
        batched = metric.compute().clone()
        metric.reset()
        for item in items:
            task.shared_step(pad_collate([item], ignore_index=255), "val")
        assert torch.equal(batched, metric.compute())


@pytest.mark.parametrize("backbone", [VIT_D2_W32, SWIN_W16], ids=["vit", "swin"])
def test_detection_result_does_not_depend_on_the_batch(backbone: dict) -> None:
    task = DetectionTask(backbone=backbone, num_classes=2,
                         head={"score_thresh": 0.0, "detections_per_img": 20}).eval()  # fmt: skip
    images = [item["image"] for item in _items(with_mask=False)]
    with torch.no_grad():
        together = task(images)
        for image, det in zip(images, together, strict=True):
            (alone,) = task([image])
            assert len(alone["boxes"]) == len(det["boxes"]) > 0
            assert (alone["boxes"] - det["boxes"]).abs().max() <= 1e-3  # pixels
            assert (alone["scores"] - det["scores"]).abs().max() <= 1e-4
            assert torch.equal(alone["labels"], det["labels"])


class StripeOracle(SegmentationTask):
    """Predicts a one-pixel-wide stripe at column 33 of 64, at whatever resolution it is given."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        logits = torch.zeros(b, 2, h, w)
        logits[:, 0] = 1.0
        logits[:, :, :, 33 * w // 64] = torch.tensor([0.0, 1.0]).view(1, 2, 1)
        return logits


@pytest.mark.parametrize("eval_size", [None, 16])
def test_scores_at_the_mask_resolution_whatever_eval_size(eval_size: int | None) -> None:
    """A 1-pixel stripe is scored on the full-size mask: 1.0 only for a prediction right at full resolution."""
    mask = np.zeros((64, 64), np.int32)
    mask[:, 33] = 1
    item = segmentation_eval_transform(eval_size)(image=np.zeros((64, 64, 3), np.uint8), mask=mask)
    assert item["mask"].shape == (64, 64)  # the mask is never resized
    task = StripeOracle(backbone=VIT_D2_W32, num_classes=2, head={"channels": 8}).eval()
    with torch.no_grad():
        task.shared_step(pad_collate([item], ignore_index=255), "val")
    miou = task.compute_metrics(task.metrics["val"], "val")["val/mIoU"].item()
    if eval_size is None:
        assert miou == 1.0  # right at full resolution
    else:
        assert item["image"].shape[-2:] == (16, 16)
        assert miou < 0.9  # right at 16x16 only: a 4-pixel-wide blur of the stripe at full size


@pytest.mark.parametrize("head", ["fcos", pytest.param("faster_rcnn", marks=pytest.mark.slow)])  # ~8 s / ~19 s
def test_detection_val_loss_does_not_depend_on_the_batch(head: str) -> None:
    """FCOS normalises by the foreground of the whole batch and Faster R-CNN samples anchors and proposals at random:
    the val loss of a batch used to differ from the mean of its images' losses (and from one call to the next)."""
    # a 64-wide pyramid and head (the default 256 took ~2.5x as long; the loss's normalisation does not depend on it)
    task = DetectionTask(backbone=VIT_D2_W32, num_classes=2, head={"name": head, "channels": 64}).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 128, 96, generator=g), torch.rand(3, 96, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 20.0, 40.0, 90.0], [50.0, 60.0, 90.0, 120.0]]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[30.0, 30.0, 70.0, 80.0]]), "labels": torch.tensor([0])},
    ]
    with torch.no_grad():
        together = float(task.shared_step({"image": images, "target": targets}, "val"))
        alone = [float(task.shared_step({"image": [i], "target": [t]}, "val")) for i, t in zip(images, targets)]
        again = float(task.shared_step({"image": images[::-1], "target": targets[::-1]}, "val"))
    assert together == pytest.approx(sum(alone) / len(alone), abs=1e-5)
    assert again == pytest.approx(together, abs=1e-5)
