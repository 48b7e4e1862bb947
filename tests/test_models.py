"""Backbone families x UPerNet: shapes at any input size, gradients, pyramid strides, clear errors."""

import pytest
import torch

from vitdense import SegmentationTask
from vitdense.models import Backbone, resolve_backbone_config

FAMILIES = [
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224",
    "vit_tiny_r_s16_p8_224",
]
# Shrunk variants of each family keep the default suite fast; the full-size names are checked once below.
TINY = {"depth": 4, "embed_dim": 64, "num_heads": 2}
TINY_SWIN = {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8)}


def tiny_task(name: str, num_classes: int = 5, **kwargs) -> SegmentationTask:
    model_kwargs = TINY_SWIN if name.startswith("swin") else TINY
    backbone = {"name": name, "model_kwargs": model_kwargs}
    return SegmentationTask(
        backbone=backbone, num_classes=num_classes, head={"channels": 32, "aux_channels": 16}, **kwargs
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_segmentation_shapes_and_gradients(name: str) -> None:
    task = tiny_task(name)
    task.train()
    logits, aux = task.forward_train(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 5, 224, 224)
    assert aux is not None and aux.shape == (2, 5, 224, 224)
    loss = task.compute_loss(logits, torch.randint(0, 5, (2, 224, 224))) + task.compute_loss(
        aux, torch.randint(0, 5, (2, 224, 224))
    )
    loss.backward()
    for module in (task.backbone, task.neck, task.decode_head, task.auxiliary_head):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(module).__name__
    assert any(g.abs().sum() > 0 for g in (p.grad for p in task.backbone.parameters()))


@pytest.mark.parametrize("name", FAMILIES)
def test_any_input_size_is_padded_and_cropped_back(name: str) -> None:
    task = tiny_task(name).eval()
    with torch.no_grad():
        assert task(torch.rand(1, 3, 256, 320)).shape == (1, 5, 256, 320)
        # Sides that are not multiples of the patch / window / stage stride.
        assert task(torch.rand(1, 3, 97, 150)).shape == (1, 5, 97, 150)


def test_batch_of_one_trains() -> None:
    """A single-image batch through the 1x1 pooling branch must not hit BatchNorm's one-value error."""
    task = tiny_task("vit_tiny_patch16_224").train()
    loss = task.compute_loss(task(torch.rand(1, 3, 64, 64)), torch.zeros(1, 64, 64, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", FAMILIES)
def test_full_size_families_acceptance(name: str) -> None:
    """The exact models named in the acceptance list map (1,3,256,320) to (1,5,256,320)."""
    task = SegmentationTask(backbone=name, num_classes=5, pretrained=False).eval()
    with torch.no_grad():
        assert task(torch.rand(1, 3, 256, 320)).shape == (1, 5, 256, 320)


def test_pyramid_strides() -> None:
    vit = tiny_task("vit_tiny_patch16_224")
    swin = tiny_task("swin_tiny_patch4_window7_224")
    hybrid = tiny_task("vit_tiny_r_s16_p8_224")
    assert vit.backbone.strides == [16] * 4 and vit.neck.strides == [4, 8, 16, 32]
    assert swin.backbone.strides == [4, 8, 16, 32] and swin.neck.strides == [4, 8, 16, 32]
    assert hybrid.backbone.strides == [32] * 4 and hybrid.neck.strides == [4, 8, 16, 32]
    feats = vit.neck(vit.backbone(torch.rand(1, 3, 64, 64)))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


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


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        SegmentationTask(backbone="vit_tiny_patch16_224", pretrained=str(tmp_path / "nope.safetensors"))
