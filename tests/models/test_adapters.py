"""LoRA adapters through peft (backbone.peft): what trains, layer decay over the adapters, merging, checkpoints that
hold only what changed, and a fit through the CLI that leaves the pretrained weights as they were."""

from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from tests.tiny import VIT
from vitdense import SegmentationTask
from vitdense.cli.entry import main
from vitdense.models.adapters import is_adapter
from vitdense.tasks.training import backbone_param_groups

pytest.importorskip("peft")

SMALL = {"depth": 4, "embed_dim": 64, "num_heads": 2}
LORA = {"r": 4, "alpha": 8, "target_modules": ["qkv"]}


def lora_task(**peft) -> SegmentationTask:
    backbone = {"name": VIT, "model_kwargs": SMALL, "peft": {**LORA, **peft}}
    return SegmentationTask(backbone=backbone, num_classes=3, img_size=32, head={"channels": 8})


def test_only_the_adapters_train_in_the_backbone() -> None:
    task = lora_task()
    named = dict(task.backbone.model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    assert trainable and all(is_adapter(n) for n in trainable)
    assert {n.split(".lora_")[0] for n in trainable} == {f"blocks.{i}.attn.qkv" for i in range(4)}
    assert sum(named[n].numel() for n in trainable) < 0.1 * sum(p.numel() for p in named.values())
    task.set_backbone_frozen(True)
    task.set_backbone_frozen(False)  # unfreezing brings the adapters back, never the base weights
    assert [n for n, p in task.backbone.model.named_parameters() if p.requires_grad] == trainable
    assert all(p.requires_grad for p in task.decode_head.parameters())


def test_adapters_take_the_layer_decay_of_the_weight_they_adapt() -> None:
    task = lora_task()
    groups = backbone_param_groups(task.backbone, 0.05, 0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(task.backbone.model.named_parameters())
    for i in range(4):
        base = named[f"blocks.{i}.attn.qkv.base_layer.weight"]
        for part in ("lora_A", "lora_B"):
            assert (
                scale[id(named[f"blocks.{i}.attn.qkv.{part}.default.weight"])] == scale[id(base)] == 0.5 ** (5 - i - 1)
            )


def test_merged_model_equals_the_adapted_one() -> None:
    task = lora_task().eval()
    with torch.no_grad():
        for name, p in task.backbone.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # peft starts B at zero (a no-op adapter): make it do something
        x = torch.rand(2, 3, 32, 48)
        adapted = task(x)
        task.backbone.merge_adapters()
        merged = task(x)
    assert not any(is_adapter(n) for n, _ in task.backbone.model.named_parameters())
    assert "blocks.0.attn.qkv.weight" in dict(task.backbone.model.named_parameters())
    assert torch.allclose(adapted, merged, atol=1e-5)
    task.set_backbone_frozen(False)  # merged, the backbone is a plain one: all of it can train again
    assert all(p.requires_grad for p in task.backbone.parameters())


def test_unknown_target_modules_name_the_layers_there_are() -> None:
    with pytest.raises(ValueError, match=r"match no Linear layer.*'qkv'"):
        lora_task(target_modules=["q_proj"])


def test_lora_fit_through_the_cli_keeps_the_pretrained_weights(tmp_path: Path) -> None:
    model = timm.create_model(VIT, pretrained=False, num_classes=0, img_size=32, **SMALL)
    weights = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    backbone = {"name": VIT, "pretrained": str(weights), "model_kwargs": SMALL, "peft": LORA}
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {"backbone": backbone, "head": {"channels": 8},
                                                                  "optimizer": {"lr": 1e-2}}},
        "data": {"class_path": "SyntheticSegmentationDataModule",
                 "init_args": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path / "runs")},
    }  # fmt: skip
    config = tmp_path / "lora.yaml"
    config.write_text(yaml.safe_dump(cfg))
    task = main(["fit", "--config", str(config)]).model
    base = model.state_dict()
    adapted = dict(task.backbone.model.named_parameters())
    for name, value in base.items():
        key = name.replace("attn.qkv.", "attn.qkv.base_layer.")
        if key in adapted:  # the pruned model keeps every block of this 4-block ViT but drops the final norm
            assert torch.equal(adapted[key].detach(), value), name
    assert any(adapted[n].abs().sum() > 0 for n in adapted if "lora_B" in n)  # the adapters trained
    trained = sum(p.numel() for n, p in adapted.items() if is_adapter(n))
    assert trained < 0.1 * sum(p.numel() for p in adapted.values())

    (ckpt,) = (tmp_path / "runs").glob("lora/version_0/checkpoints/last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not any("base_layer" in k or k.endswith("pos_embed") for k in state["state_dict"])
    assert any("lora_A" in k for k in state["state_dict"]) and any(
        k.startswith("decode_head") for k in state["state_dict"]
    )
    logged = main(["test", "--config", str(config), "--ckpt_path", str(ckpt)]).model
    restored = dict(logged.backbone.model.named_parameters())
    assert all(torch.equal(restored[n].detach(), p.detach()) for n, p in adapted.items())

    # As a starting point for another run: the slim checkpoint is refused with the remedy, and its export (adapters
    # merged) gives the merged weights.
    fresh = {"name": VIT, "model_kwargs": SMALL}
    with pytest.raises(ValueError, match=r"LoRA adapters.*vitdense export"):
        SegmentationTask(backbone={**fresh, "pretrained": str(ckpt)}, num_classes=3, img_size=32)
    main(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--format", "safetensors"])
    (exported,) = (tmp_path / "runs").glob("lora/version_0/*.safetensors")
    merged = SegmentationTask(backbone={**fresh, "pretrained": str(exported)}, num_classes=3, img_size=32)
    logged.backbone.merge_adapters()
    expected = logged.backbone.model.state_dict()
    for name, value in merged.backbone.model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_checkpoint_of_a_random_base_keeps_it() -> None:
    """pretrained: false has no source to rebuild the frozen base from (a new run draws other random weights), so
    its checkpoint keeps the base; a checkpoint restores the same outputs in a process with another seed."""
    torch.manual_seed(0)
    trained = lora_task().eval()
    checkpoint = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    trained.on_save_checkpoint(checkpoint)
    assert any("base_layer" in k for k in checkpoint["state_dict"])
    torch.manual_seed(1)
    restored = lora_task().eval()
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(images), trained(images))
