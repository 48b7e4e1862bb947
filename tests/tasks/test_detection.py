"""DetectionTask on every backbone family: eval output, finite losses, pyramids, a gradient for every parameter, mAP."""

import pytest
import torch

from tests.tiny import FAMILIES, tiny
from vitdense import DetectionTask


@pytest.mark.parametrize("name", FAMILIES)
def test_detection_eval_output_and_train_loss(name: str) -> None:
    task = DetectionTask(backbone=tiny(name), num_classes=3, head={"score_thresh": 0.0}).eval()
    with torch.no_grad():
        out = task(torch.rand(2, 3, 256, 320))
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[-1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"])
        if len(det["boxes"]):
            assert det["boxes"][:, 2].max() <= 320 and det["boxes"][:, 3].max() <= 256
            assert det["labels"].min() >= 0 and det["labels"].max() < 3
    task.train()
    batch = {
        "image": [torch.rand(3, 96, 128), torch.rand(3, 80, 64)],  # different sizes, one image without boxes
        "target": [
            {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        ],
    }
    loss = task.shared_step(batch, "train")
    assert torch.isfinite(loss)


@pytest.mark.parametrize("head", ["fcos", "faster_rcnn"])
def test_other_detection_heads(head: str) -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=2, head={"name": head, "score_thresh": 0.0})
    batch = {"image": [torch.rand(3, 64, 64)], "target": [{"boxes": torch.tensor([[4.0, 4, 40, 40]]),
                                                           "labels": torch.tensor([1])}]}  # fmt: skip
    assert torch.isfinite(task.train().shared_step(batch, "train"))
    with torch.no_grad():
        (det,) = task.eval()(torch.rand(1, 3, 64, 64))
    assert det["labels"].numel() == 0 or det["labels"].max() < 2


def test_vitdet_pyramid_from_last_block() -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=1)
    assert task.backbone.out_indices == [3]
    assert task.detector.backbone.strides == [8, 16, 32, 64, 128]  # RetinaNet's P3-P7
    sizes = task.detector.anchor_generator.sizes
    assert sizes[0][0] == 32 and max(sizes[-1]) == 812  # 4 x stride x 2^(k/3), as in the RetinaNet paper
    rcnn = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=1, head={"name": "faster_rcnn"})
    assert rcnn.detector.backbone.strides == [4, 8, 16, 32, 64]  # RPN on P2-P6
    assert rcnn.detector.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]  # RoIs from P2-P5 (ViTDet)


@pytest.mark.parametrize("head", ["retinanet", "fcos", "faster_rcnn"])
@pytest.mark.parametrize("name", [FAMILIES[0], FAMILIES[2]])
def test_detection_every_parameter_gets_a_gradient(name: str, head: str) -> None:
    """DDP stops on parameters that take no part in the loss: the body builds only the levels a detector reads."""
    task = DetectionTask(backbone=tiny(name), num_classes=2, head={"name": head}).train()
    batch = {"image": [torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
             "target": [{"boxes": torch.tensor([[4.0, 4, 40, 40]]), "labels": torch.tensor([1])},
                        {"boxes": torch.tensor([[10.0, 8, 30, 60]]), "labels": torch.tensor([0])}]}  # fmt: skip
    task.shared_step(batch, "train").backward()
    unused = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused


def test_swin_detection_pyramid_normalises_each_stage() -> None:
    task = DetectionTask(backbone=tiny(FAMILIES[2]), num_classes=1)
    neck = task.detector.backbone.neck
    assert task.backbone.strides == [8, 16, 32] and len(neck.norms) == 3  # C3-C5 feed RetinaNet's FPN


def test_map_perfect_and_missed_box() -> None:
    """mAP = 1 for perfect predictions; lower when a ground-truth box is missed (COCO definitions)."""
    task = DetectionTask(backbone=tiny(FAMILIES[0]), num_classes=2)
    metric = task.metrics["val"]
    target = [{"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 100, 120]]), "labels": torch.tensor([0, 1])}]
    perfect = [{**target[0], "scores": torch.tensor([0.9, 0.8])}]
    metric.update(perfect, target)
    scores = task.compute_metrics(metric, "val")
    assert scores["val/mAP"].item() == pytest.approx(1.0)
    assert scores["val/mAP_50"].item() == pytest.approx(1.0) and scores["val/mAP_75"].item() == pytest.approx(1.0)
    metric.reset()
    missed = [{"boxes": target[0]["boxes"][:1], "labels": target[0]["labels"][:1], "scores": torch.tensor([0.9])}]
    metric.update(missed, target)
    assert task.compute_metrics(metric, "val")["val/mAP"].item() < 1.0
