"""Fine-tuning through the real CLI's fit: a frozen backbone, unfreezing at an epoch, EMA and gradient checkpointing."""

from pathlib import Path

import torch

from tests.tiny import tiny_vit
from vitdense.cli import main


def _seg_fit(tmp_path: Path, epochs: int, **model_args) -> tuple[dict, dict]:
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": tiny_vit(), "head": {"channels": 16},
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
