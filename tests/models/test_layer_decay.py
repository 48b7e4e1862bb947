"""Layer-wise lr decay follows BEiT / mmseg on the whole model: stem decay**(L+1), block i decay**(L-i), head 1.0."""

import re

import pytest
import torch

from tests.tiny import FOUNDATION_NAMES, tiny_foundation
from vitdense import ClassificationTask, DetectionTask, SegmentationTask
from vitdense.tasks.base import BaseTask

DECAY = 0.65

# Exponent of DECAY per parameter-name pattern, written out by hand from the BEiT rule (first match wins).
VIT_B_TABLE = [
    (r"backbone\.model\.(cls_token|pos_embed|patch_embed\.)", 13),
    *[(rf"backbone\.model\.blocks\.{i}\.", 12 - i) for i in range(12)],
    (r"backbone\.model\.(norm|fc_norm)\.", 0),
    (r"(?!backbone\.)", 0),  # neck and heads
]

SWIN_T_TABLE = [  # depths 2-2-6-2; timm runs each patch merging at the start of the next stage
    (r"backbone\.model\.patch_embed\.", 13),
    (r"backbone\.model\.layers\.0\.blocks\.0\.", 12),
    (r"backbone\.model\.layers\.0\.blocks\.1\.", 11),
    (r"backbone\.model\.layers\.1\.(downsample|blocks\.0)\.", 10),
    (r"backbone\.model\.layers\.1\.blocks\.1\.", 9),
    (r"backbone\.model\.layers\.2\.(downsample|blocks\.0)\.", 8),
    (r"backbone\.model\.layers\.2\.blocks\.1\.", 7),
    (r"backbone\.model\.layers\.2\.blocks\.2\.", 6),
    (r"backbone\.model\.layers\.2\.blocks\.3\.", 5),
    (r"backbone\.model\.layers\.2\.blocks\.4\.", 4),
    (r"backbone\.model\.layers\.2\.blocks\.5\.", 3),
    (r"backbone\.model\.layers\.3\.(downsample|blocks\.0)\.", 2),
    (r"backbone\.model\.layers\.3\.blocks\.1\.", 1),
    (r"backbone\.model\.norm\.", 0),
    (r"(?!backbone\.)", 0),
]

TABLES = {"vit_base_patch16_224": VIT_B_TABLE, "swin_tiny_patch4_window7_224": SWIN_T_TABLE}


def expected_scale(table: list[tuple[str, int]], name: str, decay: float) -> float:
    for pattern, exponent in table:
        if re.match(pattern, name):
            return decay**exponent
    raise AssertionError(f"no reference entry for {name}")


def assert_layer_decay_matches(task: BaseTask, table: list[tuple[str, int]], decay: float, base_lr: float) -> None:
    """Every trainable parameter's lr equals base_lr x the reference scale; norms, biases, tokens get no decay."""
    optimizer = task.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in task.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            assert group["initial_lr"] == pytest.approx(base_lr * expected_scale(table, name, decay), rel=1e-9), name
            no_decay = p.ndim <= 1 or re.search(r"(pos_embed|cls_token|reg_token|relative_position_bias_table)$", name)
            assert (group["weight_decay"] == 0.0) == bool(no_decay), name
    assert seen == {n for n, p in task.named_parameters()}, "every parameter is in exactly one group"


def build(kind: str, name: str) -> BaseTask:
    optimizer = {"lr": 1e-4, "layer_decay": DECAY}
    if kind == "segmentation":
        return SegmentationTask(backbone=name, num_classes=3, optimizer=optimizer, head={"channels": 32})
    if kind == "detection":
        return DetectionTask(backbone=name, num_classes=3, optimizer=optimizer, head={"channels": 32})
    return ClassificationTask(backbone=name, num_classes=3, optimizer=optimizer)


@pytest.mark.parametrize("kind", ["segmentation", "detection", "classification"])
@pytest.mark.parametrize("name", list(TABLES))
def test_layer_decay_matches_the_beit_reference_table(kind: str, name: str) -> None:
    task = build(kind, name)
    assert_layer_decay_matches(task, TABLES[name], DECAY, 1e-4)
    if name.startswith("vit") and kind == "segmentation":
        last = dict(task.named_parameters())["backbone.model.blocks.11.attn.qkv.weight"]
        assert any(last is p for g in task.configure_optimizers()["optimizer"].param_groups for p in g["params"])


def test_pruned_model_keeps_the_whole_model_numbering() -> None:
    """Blocks after the last used one are pruned, but the last kept block still trains at decay**(L - i)."""
    task = SegmentationTask(
        backbone={"name": "vit_base_patch16_224", "out_indices": [1, 3, 5, 7], "truncate": True,
                  "model_kwargs": {"depth": 12}},
        num_classes=3, optimizer={"lr": 1.0, "layer_decay": 0.5}, head={"channels": 16},
    )  # fmt: skip
    assert len(task.backbone.model.blocks) == 8
    assert_layer_decay_matches(task, VIT_B_TABLE, 0.5, 1.0)


def test_no_layer_decay_gives_every_group_the_base_lr() -> None:
    task = SegmentationTask(backbone="vit_tiny_patch16_224", num_classes=3, optimizer={"lr": 3e-4})
    groups = task.configure_optimizers()["optimizer"].param_groups
    assert {g["initial_lr"] for g in groups} == {3e-4}
    assert torch.is_tensor(next(iter(groups[0]["params"])))


# Today's backbones, as tiny 2-block variants: stem (class and register tokens, pos-embed, patch embedding) at
# decay**3, block i at decay**(2 - i), the final norms (norm, fc_norm), a pooling head and everything after the
# backbone at 1.0.
TINY_TABLE = [
    (r"backbone\.model\.(cls_token|reg_token|pos_embed|patch_embed\.)", 3),
    (r"backbone\.model\.blocks\.0\.", 2),
    (r"backbone\.model\.blocks\.1\.", 1),
    (r"backbone\.model\.(norm|fc_norm|head_norm|attn_pool)\.", 0),  # attn_pool: SigLIP's attention-pool head
    (r"(?!backbone\.)", 0),
]


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
@pytest.mark.parametrize("name", FOUNDATION_NAMES)
def test_foundation_backbones_follow_the_beit_rule_with_register_tokens(kind: str, name: str) -> None:
    backbone = tiny_foundation(name)
    optimizer = {"lr": 1e-4, "layer_decay": DECAY}
    task = (
        SegmentationTask(backbone=backbone, num_classes=3, optimizer=optimizer, head={"channels": 8})
        if kind == "segmentation"
        else ClassificationTask(backbone=backbone, num_classes=3, optimizer=optimizer)
    )
    assert_layer_decay_matches(task, TINY_TABLE, DECAY, 1e-4)
