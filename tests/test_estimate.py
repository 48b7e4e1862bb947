"""`vitdense estimate`: per-stage FLOPs from formulas, checked against torch.utils.flop_counter on real forwards."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.utils.flop_counter import FlopCounterMode

from tests.tiny import HYBRID_D2, SWIN_D1121_W24, VIT_D4_W48
from vitdense import ClassificationTask, DetectionTask, SegmentationTask
from vitdense.cli.entry import main
from vitdense.cost.estimate import estimate

REPO = Path(__file__).resolve().parents[1]
BACKBONES = {"vit": VIT_D4_W48, "swin": SWIN_D1121_W24, "hybrid": HYBRID_D2}


def counted_flops(run) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_segmentation_estimate_matches_the_flop_counter(kind: str) -> None:
    task = SegmentationTask(backbone=BACKBONES[kind], num_classes=5, pretrained=False, img_size=96,
                            head={"channels": 16, "aux_channels": 8})  # fmt: skip
    size = (96, 128)  # not square, not a multiple of Swin's 7x7 windows at every stage
    result = estimate(task, size)
    task.train()
    expected = counted_flops(lambda: task.forward_train(torch.rand(1, 3, *size)))
    assert result.total_flops(training=True) == pytest.approx(expected, rel=0.10)
    task.eval()
    expected_eval = counted_flops(lambda: task(torch.rand(1, 3, *size)))
    assert result.total_flops(training=False) == pytest.approx(expected_eval, rel=0.10)
    assert result.total_flops(training=False) < result.total_flops(training=True)  # the auxiliary head trains only
    stages = {s.name: s for s in result.stages}
    assert {"neck", "decode_head", "auxiliary_head"} <= set(stages)
    assert sum(s.attn_flops for s in result.stages) > 0
    assert result.params == sum(p.numel() for p in task.parameters())


def test_tokens_and_attention_scale_with_the_patch_size() -> None:
    def vit(patch: int) -> SegmentationTask:
        backbone = {"name": "vit_tiny_patch16_224",
                    "model_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 3, "patch_size": patch}}  # fmt: skip
        return SegmentationTask(backbone=backbone, num_classes=3, pretrained=False, img_size=128,
                                head={"channels": 8, "aux_weight": 0.0})  # fmt: skip

    coarse, fine = estimate(vit(16), (128, 128)), estimate(vit(8), (128, 128))
    block = next(s for s in coarse.stages if s.name.startswith("backbone.blocks"))
    fine_block = next(s for s in fine.stages if s.name.startswith("backbone.blocks"))
    assert (block.tokens, fine_block.tokens) == (8 * 8 + 1, 16 * 16 + 1)  # N = HW/P^2, plus the class token
    assert block.context == block.tokens  # global attention
    ratio = fine_block.attn_flops / block.attn_flops
    assert ratio == pytest.approx((257 / 65) ** 2, rel=1e-6)  # 4x tokens: ~16x attention


def test_swin_attends_within_windows() -> None:
    task = SegmentationTask(backbone=BACKBONES["swin"], num_classes=3, pretrained=False, img_size=224,
                            head={"channels": 8, "aux_weight": 0.0})  # fmt: skip
    first = next(s for s in estimate(task, (224, 224)).stages if s.name == "backbone.layers.0")
    assert (first.tokens, first.context) == (56 * 56, 49)


def test_classification_and_detection_estimates_match_the_flop_counter() -> None:
    cls = ClassificationTask(backbone=BACKBONES["vit"], num_classes=4, pretrained=False, img_size=64)
    cls.eval()
    expected = counted_flops(lambda: cls(torch.rand(1, 3, 64, 64)))
    assert estimate(cls, (64, 64)).total_flops() == pytest.approx(expected, rel=0.10)

    det = DetectionTask(backbone=BACKBONES["vit"], num_classes=3, pretrained=False, img_size=64, head={"channels": 16})
    det.train()
    images = torch.rand(1, 3, 64, 64)

    def body_and_head() -> None:  # what the estimate covers: no anchors, sampling or box decoding
        det.detector.head(list(det.detector.backbone(images).values()))

    det_estimate = estimate(det, (64, 64))
    assert det_estimate.total_flops() == pytest.approx(counted_flops(body_and_head), rel=0.10)
    assert det_estimate.params == sum(p.numel() for p in det.parameters())  # the body's backbone counted once


def test_model_summary_counts_the_same_forward_flops() -> None:
    """Lightning's summary at the start of `fit` said "Total FLOPs: 0"; now it counts the estimate's figure."""
    task = SegmentationTask(backbone=BACKBONES["vit"], num_classes=5, pretrained=False, img_size=64,
                            head={"channels": 16, "aux_channels": 8})  # fmt: skip
    summary = ModelSummary(task, max_depth=1)
    assert summary.total_flops == pytest.approx(estimate(task, (64, 64)).total_flops(training=False), rel=0.01)


def test_estimate_command_on_the_ade20k_recipe(capsys) -> None:
    """The shipped ViT-B UPerNet recipe, shrunk: the table, and FLOPs that agree with the flop counter."""
    config = REPO / "configs" / "ade20k" / "upernet_vit_base.yaml"
    # The recipe says `pretrained: true`; estimate needs no weights, so this runs offline as written.
    table = main(["estimate", "--config", str(config), "--batch", "2", "--size", "256",
                  "--model.init_args.backbone.model_kwargs", "{depth: 12, embed_dim: 96, num_heads: 3}",
                  "--model.init_args.head.channels", "32", "--model.init_args.head.aux_channels", "16"])  # fmt: skip
    out = capsys.readouterr().out
    assert table in out
    for text in ("input 256x256, batch 2", "backbone.blocks.0-3", "backbone.blocks.8-11", "decode_head",
                 "auxiliary_head (train only)", "training step"):  # fmt: skip
        assert text in table
    line = next(ln for ln in table.splitlines() if ln.startswith("backbone.blocks.0-3"))
    assert line.split()[1:3] == ["257", "all"]  # (256/16)^2 + the class token
    task = SegmentationTask(backbone={"name": "vit_base_patch16_224.mae", "img_size": 256, "out_indices": [3, 5, 7, 11],
                                      "model_kwargs": {"depth": 12, "embed_dim": 96, "num_heads": 3}},
                            num_classes=150, pretrained=False, head={"channels": 32, "aux_channels": 16})  # fmt: skip
    task.train()
    expected = counted_flops(lambda: task.forward_train(torch.rand(1, 3, 256, 256)))
    reported = float(next(ln for ln in table.splitlines() if ln.startswith("forward, inference")).split()[2])
    assert estimate(task, (256, 256)).total_flops() == pytest.approx(expected, rel=0.10)
    assert reported * 1e9 == pytest.approx(estimate(task, (256, 256)).total_flops(training=False), rel=0.01)


def test_a_frozen_backbone_keeps_no_activations_and_no_optimizer_state() -> None:
    kwargs = {"backbone": VIT_D4_W48, "num_classes": 5, "img_size": 64, "neck": "identity", "head": {"name": "linear"}}
    trained = estimate(SegmentationTask(**kwargs), (64, 64), batch=2)
    frozen = estimate(SegmentationTask(**kwargs, freeze_backbone=True), (64, 64), batch=2)
    later = estimate(SegmentationTask(**kwargs, unfreeze_at_epoch=1), (64, 64), batch=2)
    head = [s for s in frozen.stages if s.name in ("decode_head", "logits resize")]
    assert frozen.trainable == sum(s.params for s in head) and trained.trainable == trained.params
    assert [s.name for s in frozen.backward_stages()] == [s.name for s in head]
    assert later.trainable == trained.params  # costed as after the unfreeze: the peak
    assert frozen.table() != trained.table() and later.table() == trained.table()
    assert "M parameters frozen" in frozen.table()


def test_per_device_memory_under_ddp_fsdp_and_activation_checkpointing() -> None:
    """DDP replicates fp32 weights, gradients and AdamW moments (4 + 4 + 8 bytes per trained parameter); FSDP holds
    each parameter's dim-0 shard, padded as fully_shard pads it, plus two gathered blocks; checkpointing keeps each
    block's input instead of everything inside it (one block recomputed at a time)."""
    from vitdense import SegmentationTask
    from vitdense.cost.estimate import estimate

    task = SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 4}}, num_classes=5,
                            img_size=64, head={"channels": 16})  # fmt: skip
    result = estimate(task, (64, 64), batch=2)
    params = list(task.parameters())
    assert len(result.blocks) == 4 and all(b.input_bytes == 17 * 192 * 4 for b in result.blocks)  # 16 patches + CLS
    ddp = result.device_memory(4, "ddp")
    assert ddp["weights"] == 4 * sum(p.numel() for p in params) and ddp["optimizer"] == 2 * ddp["gradients"]
    fsdp = result.device_memory(4, "fsdp")
    shard = sum(-(-p.shape[0] // 4) * (p.numel() // p.shape[0]) if p.ndim else 1 for p in params)
    assert fsdp["weights"] == 4 * shard and fsdp["gradients"] + fsdp["optimizer"] == 12 * shard
    assert fsdp["gathered"] == 2 * 4 * sum(p.numel() for p in task.backbone.model.blocks[0].parameters())
    full, kept = result.activation_bytes(False), result.activation_bytes(True)
    inside = sum(b.train_bytes for b in result.blocks)
    assert kept == full - inside + 4 * 17 * 192 * 4 + max(b.train_bytes for b in result.blocks) < full
    assert fsdp["activations"] == ddp["activations"] == 2 * full
    text = result.device_table(8, "fsdp", True, 2, gpu_gib=0.001)
    assert "does not fit a 0.001 GiB GPU" in text and "(sharded)" in text
