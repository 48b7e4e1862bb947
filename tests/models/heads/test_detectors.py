"""Detectors: a name -> builder table, and a neck a config can name."""

import pytest
import torch

from tests.tiny import SWIN_W24, VIT_D2_W32
from vitdense import DetectionTask
from vitdense.models.heads import DETECTORS
from vitdense.models.necks import FPN, SimpleFeaturePyramid


def detector(backbone: dict, **head) -> DetectionTask:
    return DetectionTask(backbone=backbone, num_classes=2, pretrained=False, img_size=64,
                         head={"channels": 32, **head})  # fmt: skip


def test_the_table_names_every_detector() -> None:
    assert set(DETECTORS) == {"retinanet", "fcos", "faster_rcnn", "mask_rcnn"}
    choices = "retinanet, fcos, faster_rcnn, mask_rcnn"
    with pytest.raises(ValueError, match=f"Unknown detection head 'yolo'; choose one of {choices}"):
        detector(VIT_D2_W32, name="yolo")


@pytest.mark.parametrize(
    ("backbone", "neck", "expected"),
    [
        (VIT_D2_W32, "auto", SimpleFeaturePyramid),
        (SWIN_W24, "auto", FPN),
        (SWIN_W24, "simple_fpn", SimpleFeaturePyramid),
    ],
)
def test_a_detection_config_can_name_its_neck(backbone: dict, neck: str, expected: type) -> None:
    task = detector(backbone, neck=neck)
    assert isinstance(task.detector.backbone.neck, expected)
    if expected is SimpleFeaturePyramid:  # ViTDet's pyramid reads the last block or stage alone
        assert len(task.backbone.out_indices) == 1
    task.train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    loss = task._losses(images, targets)
    loss.backward()
    assert all(p.grad is not None for p in task.parameters() if p.requires_grad)  # DDP needs every gradient


def test_fpn_on_a_plain_vit_is_refused_with_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"head\.neck=fpn needs stages at several strides.*use simple_fpn"):
        detector(VIT_D2_W32, neck="fpn")
    with pytest.raises(ValueError, match="Unknown detection neck 'bifpn'"):
        detector(VIT_D2_W32, neck="bifpn")
