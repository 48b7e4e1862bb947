"""Weight sources, resolution change, the fine-tuning recipe (layer decay, no-decay groups) and freezing."""

import time
from pathlib import Path

import pytest
import timm
import torch
from lightning.pytorch import Trainer
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from vitdense import ClassificationTask, SegmentationTask
from vitdense.cli import main

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vit_tiny_patch16_224.safetensors"
TINY = {"depth": 4, "embed_dim": 64, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """A tiny vit_tiny_patch16_224-shaped timm model with random weights, saved as .safetensors and .pth."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, **TINY)
    folder = tmp_path_factory.mktemp("weights")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, folder / "tiny.safetensors")
    torch.save(sd, folder / "tiny.pth")
    return {"safetensors": folder / "tiny.safetensors", "pth": folder / "tiny.pth", "sd": sd}


def backbone(path=None, img_size=32, **extra) -> dict:
    cfg = {"name": "vit_tiny_patch16_224", "img_size": img_size, "model_kwargs": TINY, **extra}
    if path is not None:
        cfg["pretrained"] = str(path)
    return cfg


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_weights_are_loaded_exactly(tiny_weights, fmt: str) -> None:
    task = SegmentationTask(backbone=backbone(tiny_weights[fmt]), num_classes=3, head={"channels": 16})
    own = task.backbone.model.state_dict()
    for key, value in tiny_weights["sd"].items():
        if key in own:
            assert torch.equal(own[key], value), key
    assert torch.equal(own["blocks.3.mlp.fc2.weight"], tiny_weights["sd"]["blocks.3.mlp.fc2.weight"])


def test_pos_embed_resampled_for_new_img_size(tiny_weights) -> None:
    task = SegmentationTask(backbone=backbone(tiny_weights["safetensors"], img_size=64), num_classes=3)
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
        SegmentationTask(backbone={**backbone(tiny_weights["pth"]), "model_kwargs": {**TINY, "embed_dim": 96,
                                                                                     "num_heads": 3}})  # fmt: skip


def test_missing_keys_are_reported(tiny_weights, tmp_path) -> None:
    sd = dict(tiny_weights["sd"])
    del sd["blocks.0.norm1.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match=r"1 missing key\(s\) \['blocks\.0\.norm1\.weight'\]"):
        SegmentationTask(backbone=backbone(tmp_path / "partial.pth"))


def test_pretrained_true_offline_fails_fast_with_local_file_hint(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"vit_tiny_patch16_224.*pretrained: /path/to/vit_tiny_patch16_224"):
        SegmentationTask(backbone="vit_tiny_patch16_224", pretrained=True)
    assert time.monotonic() - start < 10


def test_classification_checkpoint_as_segmentation_backbone(tiny_weights, tmp_path) -> None:
    cls = ClassificationTask(backbone=backbone(tiny_weights["pth"]), num_classes=2)
    with torch.no_grad():
        cls.backbone.model.blocks[1].mlp.fc1.weight.add_(1.0)  # "fine-tuned"
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(cls)
    trainer.save_checkpoint(tmp_path / "cls.ckpt")
    seg = SegmentationTask(backbone=backbone(tmp_path / "cls.ckpt"), num_classes=5)
    torch.testing.assert_close(seg.backbone.model.blocks[1].mlp.fc1.weight, cls.backbone.model.blocks[1].mlp.fc1.weight)


def _seg_fit(tmp_path: Path, epochs: int, **model_args) -> tuple[dict, dict]:
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": backbone(), "head": {"channels": 16},
                                                                  **model_args}},
        "data": {"class_path": "SyntheticSegmentationDataModule",
                 "init_args": {"num_train": 8, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"accelerator": "cpu", "max_epochs": epochs, "enable_progress_bar": False, "logger": False,
                    "enable_checkpointing": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path)},
    }  # fmt: skip
    cli = main(["--config", str(_write(tmp_path, cfg))], run=False)
    before = {k: v.clone() for k, v in cli.model.backbone.state_dict().items()}
    cli.trainer.fit(cli.model, cli.datamodule)
    return before, cli.model.backbone.state_dict()


def _write(tmp_path: Path, cfg: dict) -> Path:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_freeze_backbone_leaves_every_backbone_tensor_unchanged(tmp_path) -> None:
    before, after = _seg_fit(tmp_path, epochs=2, freeze_backbone=True)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unfreeze_at_epoch_trains_the_backbone_afterwards(tmp_path) -> None:
    before, after = _seg_fit(tmp_path, epochs=2, unfreeze_at_epoch=1)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.blocks.0.attn.qkv.weight" in changed and "model.patch_embed.proj.weight" in changed


def test_unfreeze_at_epoch_keeps_backbone_fixed_before(tmp_path) -> None:
    before, after = _seg_fit(tmp_path, epochs=1, unfreeze_at_epoch=1)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ema_and_grad_checkpointing_train(tmp_path) -> None:
    before, after = _seg_fit(tmp_path, epochs=1, ema_decay=0.9, grad_checkpointing=True)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_optimizer_and_scheduler_replaced_from_yaml_keep_the_groups(tmp_path) -> None:
    """A LightningCLI callable (class_path + init_args) replaces AdamW but gets the same parameter groups."""
    import yaml

    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}}
    step = {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}
    model = {"class_path": "SegmentationTask", "init_args": {
        "backbone": backbone(), "head": {"channels": 16}, "optimizer": sgd, "scheduler": step}}  # fmt: skip
    data = {"class_path": "SyntheticSegmentationDataModule",
            "init_args": {"num_train": 8, "num_val": 4, "image_size": 32, "batch_size": 4}}  # fmt: skip
    trainer = {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False,
               "enable_model_summary": False, "default_root_dir": str(tmp_path / "runs")}  # fmt: skip
    cfg = tmp_path / "sgd.yaml"
    cfg.write_text(yaml.safe_dump({"model": model, "data": data, "trainer": trainer}))
    cli = main(["fit", "--config", str(cfg)])
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    names = {id(p): n for n, p in cli.model.named_parameters()}
    wd = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert wd["backbone.model.pos_embed"] == 0.0 and wd["backbone.model.blocks.0.norm1.weight"] == 0.0
    assert wd["backbone.model.blocks.0.attn.qkv.weight"] == 1e-4
    assert all(g["lr"] == pytest.approx(0.01 * 0.5**2) for g in optimizer.param_groups)  # StepLR after 2 epochs
    # Saved as config, the callables survive a weights_only checkpoint round trip through the CLI.
    ckpt = tmp_path / "sgd.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    cli = main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)])
    assert "test/mIoU" in cli.trainer.callback_metrics
