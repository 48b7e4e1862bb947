"""Backbone: normalisation from timm's pretrained_cfg, config keys and names checked, four levels from any depth."""

import pytest
import torch

from tests.tiny import TINY, TINY_SWIN
from vitdense import SegmentationTask
from vitdense.models import Backbone, resolve_backbone_config


def test_backbone_normalises_with_pretrained_cfg() -> None:
    vit = Backbone(resolve_backbone_config({"name": "vit_tiny_patch16_224", "model_kwargs": TINY}))
    swin = Backbone(resolve_backbone_config({"name": "swin_tiny_patch4_window7_224", "model_kwargs": TINY_SWIN}))
    assert vit.mean.flatten().tolist() == pytest.approx([0.5] * 3)
    assert swin.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown backbone 'vit_tiny_patch16_244'.*vit_tiny_patch16_224"):
        SegmentationTask(backbone="vit_tiny_patch16_244", num_classes=3)


def test_unknown_config_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown head key"):
        SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "model_kwargs": TINY}, head={"chanels": 8})
    with pytest.raises(ValueError, match="Unknown backbone key"):
        SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "drop_path": 0.1})


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_segmentation_on_a_vit_with_fewer_than_four_blocks(depth: int) -> None:
    from vitdense import SegmentationTask

    task = SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "model_kwargs": {**TINY, "depth": depth}},
                            num_classes=3, head={"channels": 16}).eval()  # fmt: skip
    assert len(task.backbone.out_indices) == 4
    with torch.no_grad():
        assert task(torch.rand(1, 3, 64, 48)).shape == (1, 3, 64, 48)


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [(12, [3, 5, 7, 11]), (24, [7, 11, 15, 23]), (32, [7, 15, 23, 31]), (40, [9, 19, 29, 39])],
)
def test_default_out_indices_follow_the_published_segmentation_settings(blocks: int, expected: list[int]) -> None:
    from vitdense.models.backbone import default_out_indices

    plain = [{"num_chs": 64, "reduction": 16} for _ in range(blocks)]
    assert default_out_indices(plain) == expected


def test_out_indices_that_stop_early_are_an_error_unless_truncation_is_asked_for() -> None:
    """A ViT-B's out_indices [3, 5, 7, 11] kept while the name changed to a deeper model used to build only the first
    12 blocks, silently; with ``truncate: true`` that cut is allowed."""
    deep = {"name": "vit_tiny_patch16_224", "model_kwargs": {**TINY, "depth": 6}, "out_indices": [0, 1, 2, 3]}
    with pytest.raises(ValueError, match=r"stop at block/stage 3 of 'vit_tiny_patch16_224', which has 6: the 2 after "
                       r"it would be dropped.*default for this model is \[1, 2, 3, 5\].*truncate: true"):  # fmt: skip
        SegmentationTask(backbone=deep, num_classes=3, head={"channels": 8})
    task = SegmentationTask(backbone={**deep, "truncate": True}, num_classes=3, head={"channels": 8})
    assert len(task.backbone.model.blocks) == 4
    # ending at the last block is fine
    SegmentationTask(backbone={**deep, "out_indices": [0, 2, 4, 5]}, num_classes=3, head={"channels": 8})
