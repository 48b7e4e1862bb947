"""DINOv2's linear segmentation head: batch norm and a 1x1 conv over the concatenated levels, and the task built on
it (frozen backbone, patch tokens straight from the blocks)."""

import pytest
import torch
import torch.nn.functional as F

from tests.tiny import tiny_foundation
from vitdense import SegmentationTask
from vitdense.models.heads import LinearHead


def test_linear_head_is_batch_norm_and_a_per_pixel_linear_map() -> None:
    torch.manual_seed(0)
    head = LinearHead([4, 6], num_classes=3).eval()
    head.bn.running_mean.uniform_(-1, 1)
    head.bn.running_var.uniform_(0.5, 2)
    fine, coarse = torch.randn(2, 4, 8, 10), torch.randn(2, 6, 4, 5)
    x = torch.cat([fine, F.interpolate(coarse, size=(8, 10), mode="bilinear", align_corners=False)], 1)
    bn = head.bn
    normed = (x - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    normed = normed * bn.weight[:, None, None] + bn.bias[:, None, None]
    expected = torch.einsum("bchw,kc->bkhw", normed, head.conv_seg.weight[:, :, 0, 0])
    expected = expected + head.conv_seg.bias[:, None, None]
    torch.testing.assert_close(head([fine, coarse]), expected, atol=1e-5, rtol=1e-5)


def test_dinov2_linear_evaluation_trains_only_the_head() -> None:
    backbone = {**tiny_foundation("vit_small_patch14_reg4_dinov2"), "out_indices": [1]}
    task = SegmentationTask(backbone=backbone, num_classes=5, img_size=56, neck="identity", head={"name": "linear"},
                            freeze_backbone=True)  # fmt: skip
    assert task.auxiliary_head is None  # aux_weight's default applies to UPerNet only
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {"decode_head.bn.weight", "decode_head.bn.bias", "decode_head.conv_seg.weight",
                         "decode_head.conv_seg.bias"}  # fmt: skip
    images = torch.rand(2, 3, 60, 45)  # not multiples of 14
    logits = task(images)
    assert logits.shape == (2, 5, 60, 45)
    logits.square().mean().backward()
    assert task.decode_head.conv_seg.weight.grad.abs().sum() > 0


def test_unknown_head_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"head\.name: 'fpn' is not one of upernet, linear"):
        SegmentationTask(backbone=tiny_foundation("vit_small_patch14_reg4_dinov2"), num_classes=2, img_size=28,
                         head={"name": "fpn"})  # fmt: skip
