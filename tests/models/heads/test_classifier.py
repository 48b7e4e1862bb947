"""The classification head: DeiT's distilled model averages its class-token and distillation-token heads."""

import torch

from tests.tiny import tiny
from vitdense import ClassificationTask


def test_deit_distilled_averages_its_two_heads() -> None:
    task = ClassificationTask(backbone=tiny("deit_tiny_distilled_patch16_224"), num_classes=3).eval()
    model, head = task.backbone.model, task.head
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(task.backbone.normalize(x))
        expected = (head.fc(tokens[:, 0]) + head.fc_dist(tokens[:, 1])) / 2
        torch.testing.assert_close(task(x), expected)
    assert not torch.allclose(head.fc.weight, head.fc_dist.weight)  # two heads, not one
