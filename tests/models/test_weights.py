"""Weight sources: local .safetensors / .pth / checkpoints loaded exactly, pos-embed resampling, clear errors."""

import time
from pathlib import Path

import pytest
import timm
import torch
from lightning.pytorch import Trainer
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from tests.tiny import TINY, tiny_vit
from vitdense import ClassificationTask, SegmentationTask

SHARED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "vit_tiny_patch16_224.safetensors"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """A tiny vit_tiny_patch16_224-shaped timm model with random weights, saved as .safetensors and .pth."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, **TINY)
    folder = tmp_path_factory.mktemp("weights")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, folder / "tiny.safetensors")
    torch.save(sd, folder / "tiny.pth")
    return {"safetensors": folder / "tiny.safetensors", "pth": folder / "tiny.pth", "sd": sd}


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_are_loaded_exactly(tiny_weights, fmt: str) -> None:
    task = SegmentationTask(backbone=tiny_vit(tiny_weights[fmt]), num_classes=3, head={"channels": 16})
    own = task.backbone.model.state_dict()
    for key, value in tiny_weights["sd"].items():
        if key in own:
            assert torch.equal(own[key], value), key
    assert torch.equal(own["blocks.3.mlp.fc2.weight"], tiny_weights["sd"]["blocks.3.mlp.fc2.weight"])


def test_pos_embed_resampled_for_new_img_size(tiny_weights) -> None:
    task = SegmentationTask(backbone=tiny_vit(tiny_weights["safetensors"], img_size=64), num_classes=3)
    expected = resample_abs_pos_embed(tiny_weights["sd"]["pos_embed"], (4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(task.backbone.model.pos_embed, expected)


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="no ../shared/weights")
def test_shared_imagenet_weights_resampled_to_384() -> None:
    from safetensors.torch import load_file

    sd = load_file(SHARED_WEIGHTS)
    task = SegmentationTask(
        backbone="vit_tiny_patch16_224", num_classes=3, pretrained=str(SHARED_WEIGHTS), img_size=384
    )
    assert task.backbone.model.pos_embed.shape == (1, 1 + 24 * 24, 192)
    expected = resample_abs_pos_embed(sd["pos_embed"], (24, 24), num_prefix_tokens=1)
    torch.testing.assert_close(task.backbone.model.pos_embed, expected)
    torch.testing.assert_close(task.backbone.model.blocks[5].attn.qkv.weight, sd["blocks.5.attn.qkv.weight"])
    assert task.backbone.mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_shape_that_cannot_be_adapted_is_an_error(tiny_weights) -> None:
    with pytest.raises(ValueError, match=r"do not fit.*cls_token: file \(1, 1, 64\) vs model \(1, 1, 96\)"):
        SegmentationTask(backbone={**tiny_vit(tiny_weights["pth"]), "model_kwargs": {**TINY, "embed_dim": 96,
                                                                                     "num_heads": 3}})  # fmt: skip


def test_missing_keys_are_reported(tiny_weights, tmp_path) -> None:
    sd = dict(tiny_weights["sd"])
    del sd["blocks.0.norm1.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match=r"1 missing key\(s\) \['blocks\.0\.norm1\.weight'\]"):
        SegmentationTask(backbone=tiny_vit(tmp_path / "partial.pth"))


def test_pretrained_true_offline_fails_fast_with_local_file_hint(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"vit_tiny_patch16_224.*pretrained: /path/to/vit_tiny_patch16_224"):
        SegmentationTask(backbone="vit_tiny_patch16_224", pretrained=True)
    assert time.monotonic() - start < 10


def test_classification_checkpoint_as_segmentation_backbone(tiny_weights, tmp_path) -> None:
    cls = ClassificationTask(backbone=tiny_vit(tiny_weights["pth"]), num_classes=2)
    with torch.no_grad():
        cls.backbone.model.blocks[1].mlp.fc1.weight.add_(1.0)  # "fine-tuned"
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(cls)
    trainer.save_checkpoint(tmp_path / "cls.ckpt")
    seg = SegmentationTask(backbone=tiny_vit(tmp_path / "cls.ckpt"), num_classes=5)
    torch.testing.assert_close(seg.backbone.model.blocks[1].mlp.fc1.weight, cls.backbone.model.blocks[1].mlp.fc1.weight)


def test_missing_weights_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        SegmentationTask(backbone="vit_tiny_patch16_224", pretrained=str(tmp_path / "nope.safetensors"))
