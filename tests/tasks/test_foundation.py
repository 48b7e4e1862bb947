"""Today's foundation backbones (DINOv2 with registers, DINOv3 with RoPE, EVA-02) in every task, as tiny variants.

Patch 14 and 16 at a 230x310 input, a size that is a multiple of neither: outputs come back at the input size and
gradients reach backbone and head.
"""

import pytest
import torch

from tests.tiny import FOUNDATION_NAMES, tiny_foundation
from vitdense import ClassificationTask, DetectionTask, SegmentationTask


def trains(task: torch.nn.Module, loss: torch.Tensor) -> None:
    loss.backward()
    backbone = [p.grad for p in task.backbone.parameters() if p.requires_grad]
    rest = [p.grad for n, p in task.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in backbone)
    assert rest and all(g is not None for g in rest)


@pytest.mark.parametrize("name", FOUNDATION_NAMES)
def test_segmentation_logits_at_the_input_size(name: str) -> None:
    task = SegmentationTask(backbone=tiny_foundation(name), num_classes=3, head={"channels": 8})
    images, mask = torch.rand(1, 3, 230, 310), torch.randint(0, 3, (1, 230, 310))
    logits, aux = task.forward_train(images)
    assert logits.shape == (1, 3, 230, 310) and aux.shape == (1, 3, 230, 310)
    trains(task, task.compute_loss(logits, mask) + task.compute_loss(aux, mask))


@pytest.mark.parametrize("name", FOUNDATION_NAMES)
def test_classification_logits(name: str) -> None:
    task = ClassificationTask(backbone=tiny_foundation(name), num_classes=4)
    logits = task(torch.rand(2, 3, 230, 310))
    assert logits.shape == (2, 4)
    trains(task, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])))


@pytest.mark.parametrize("name", FOUNDATION_NAMES)
def test_detection_boxes(name: str) -> None:
    task = DetectionTask(backbone=tiny_foundation(name), num_classes=2, head={"channels": 32})
    images = [torch.rand(3, 230, 310)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0]]), "labels": torch.tensor([1])}]
    task.train()
    trains(task, task._losses(images, targets))
    task.eval()
    with torch.no_grad():
        (out,) = task(images)
    assert out["boxes"].shape[1] == 4 and len(out["scores"]) == len(out["labels"])
    if len(out["boxes"]):
        assert out["boxes"][:, 2].max() <= 310 and out["boxes"][:, 3].max() <= 230  # input pixels
