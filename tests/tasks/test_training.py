"""vitdense.tasks.training: fused AdamW, replaced optimisers (YAML class_path or a callable) keeping the groups,
and fine-tuning through the real CLI's fit (a frozen backbone, unfreezing at an epoch, EMA, gradient checkpointing)."""

from pathlib import Path

import pytest
import torch

from tests.tiny import PATCH8_VIT_D2, tiny_vit
from vitdense import ClassificationTask
from vitdense.cli.entry import main


def test_adamw_is_fused_and_updates_as_the_loop_implementation_does() -> None:
    from vitdense.tasks.training import build_adamw, resolve_optimizer_config

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    grads = [torch.randn_like(w) for w in weights]
    results = []
    for fused in (True, False):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        groups = [{"params": params[:1], "weight_decay": 0.05, "lr_scale": 1.0},
                  {"params": params[1:], "weight_decay": 0.0, "lr_scale": 0.5}]  # fmt: skip
        cfg = resolve_optimizer_config({"lr": 1e-2})
        optimizer = build_adamw(groups, cfg) if fused else torch.optim.AdamW(
            [{**g, "lr": 1e-2 * g["lr_scale"]} for g in groups], lr=1e-2, foreach=False
        )  # fmt: skip
        assert optimizer.defaults.get("fused") == (True if fused else None)
        for _ in range(3):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for fused_param, loop_param in zip(*results, strict=True):
        torch.testing.assert_close(fused_param, loop_param)


def test_optimizer_and_scheduler_replaced_from_yaml_keep_the_groups(tmp_path) -> None:
    """A LightningCLI callable (class_path + init_args) replaces AdamW but gets the same parameter groups."""
    import yaml

    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}}
    step = {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}
    model = {"class_path": "SegmentationTask", "init_args": {
        "backbone": tiny_vit(), "head": {"channels": 16}, "optimizer": sgd, "scheduler": step}}  # fmt: skip
    data = {"class_path": "SyntheticSegmentationDataModule",
            "init_args": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4}}  # fmt: skip
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


def test_unfreezing_keeps_a_replaced_optimizers_settings() -> None:
    """Backbone groups built for SGD get SGD's lr and weight decay, not vitdense's AdamW defaults."""
    task = ClassificationTask(
        backbone=PATCH8_VIT_D2, num_classes=3, unfreeze_at_epoch=1,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4),
    )  # fmt: skip
    optimizer = task.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in task.named_parameters()}
    groups = {names[id(p)]: g for g in optimizer.param_groups for p in g["params"]}
    assert isinstance(optimizer, torch.optim.SGD)
    assert groups["backbone.model.blocks.0.attn.qkv.weight"]["lr"] == 0.01
    assert groups["backbone.model.blocks.0.attn.qkv.weight"]["weight_decay"] == 1e-4
    assert groups["backbone.model.pos_embed"]["weight_decay"] == 0.0


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


def test_fine_tuning_after_validate_in_the_same_process(tmp_path: Path) -> None:
    """Evaluate, then fit, in one process (a notebook's workflow): nothing built under validate's inference mode
    (cached resize matrices, metric states) may break the training step that follows."""
    from lightning.pytorch import Trainer

    from vitdense import SegmentationTask
    from vitdense.data import SyntheticSegmentationDataModule
    from vitdense.models.resize import interpolation_matrix

    interpolation_matrix.cache_clear()
    data_classes = SyntheticSegmentationDataModule(image_size=32).num_classes
    task = SegmentationTask(backbone=tiny_vit(), num_classes=data_classes, head={"channels": 16, "aux_weight": 0})
    data = SyntheticSegmentationDataModule(num_train=4, num_val=2, image_size=32, batch_size=2)
    args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "default_root_dir": str(tmp_path)}  # fmt: skip
    Trainer(**args).validate(task, data)
    Trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=0, **args).fit(task, data)
    assert task.trainer.global_step == 1


def test_warmup_longer_than_half_the_run_is_named_at_fit(tmp_path: Path) -> None:
    """A template's 100-step warmup on a 4-step run: the lr would never reach its peak. Fit says so and names the
    key; a warmup of a tenth of the run says nothing."""
    import warnings

    from lightning.pytorch import Trainer

    from vitdense import SegmentationTask
    from vitdense.data import SyntheticSegmentationDataModule
    from vitdense.tasks.training import warmup_too_long

    assert warmup_too_long({"warmup_steps": 10}, 100) is None and warmup_too_long({"warmup_steps": 0}, 1) is None
    assert "reaches its peak only at step 60" in warmup_too_long({"warmup_steps": 60}, 100)

    def fit(warmup: int) -> list[str]:
        data = SyntheticSegmentationDataModule(num_train=8, num_val=4, image_size=32, batch_size=4)
        task = SegmentationTask(
            num_classes=data.num_classes,
            backbone=tiny_vit(),
            head={"channels": 16},
            scheduler={"name": "poly", "warmup_steps": warmup},
        )
        trainer = Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          default_root_dir=str(tmp_path))  # fmt: skip
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer.fit(task, data)
        return [str(w.message) for w in record if "[vitdense]" in str(w.message)]

    said = fit(100)
    assert len(said) == 1 and "scheduler.warmup_steps 100" in said[0] and "4 optimizer steps" in said[0]
    assert "never reaches its peak" in said[0]
    assert fit(0) == []
