"""What a configuration costs before any training: tokens, attention and other FLOPs, parameters, activation memory.

The figures come from formulas over the shapes one forward pass produces on PyTorch's ``meta`` device (no memory,
no arithmetic): a Linear layer costs ``2 * rows * in * out``, a convolution ``2 * out_pixels * out_channels *
in_channels / groups * kh * kw``, an attention layer ``4 * N * N_ctx * dim`` per image for its two matrix
products (N tokens, each attending to N_ctx tokens: all N in a ViT, the M x M window in Swin), and the
bilinear logit resizes their two matrix products. Tokens N = H * W / P^2, so patch 8 instead of 16, or 1024 instead
of 512, gives 4x the tokens and 16x the attention FLOPs. Norms, activations and element-wise operations are left
out, as ``torch.utils.flop_counter`` leaves them out (the suite checks the totals against it).

Activation memory is an estimate: for training, the outputs of every layer kept for the backward pass (fused
attention keeps no N x N matrix) in the stages the backward reaches (a frozen backbone's are not kept); for
inference, the largest input + output of any one layer. Parameter memory is 4 bytes per parameter, plus 12 per
trained parameter in training with AdamW (gradients, two moments). The backward costs ~2x the forward of the stages
it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitdense.cost.device_memory import BlockCost, DeviceMemory
from vitdense.models import resize
from vitdense.models.backbone import Backbone

_STAGE_CONTAINERS = ("blocks", "layers", "stages")


def _register_cpu_attention_flops() -> None:
    """Teach ``torch.utils.flop_counter`` (and so Lightning's model summary) the FLOPs of fused attention on CPU.

    On CPU ``F.scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``, which the flop
    counter has no formula for: it counted a ViT's attention as 0. The formulas are the counter's own for the
    other fused attention kernels.
    """
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward.default in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention_flops()


@dataclass
class StageCost:
    """Forward cost of one stage for one image."""

    name: str
    attn_flops: float = 0.0
    other_flops: float = 0.0
    params: int = 0
    trainable: int = 0
    tokens: int = 0
    context: int = 0
    train_bytes: float = 0.0
    infer_bytes: float = 0.0
    training_only: bool = False

    @property
    def flops(self) -> float:
        return self.attn_flops + self.other_flops


@dataclass
class Estimate(DeviceMemory):
    """Per-stage costs of one forward pass at ``size`` for one image; ``batch`` scales the memory totals."""

    size: tuple[int, int]
    batch: int
    stages: list[StageCost] = field(default_factory=list)
    bytes_per_value: int = 4
    inference_flops: float | None = None
    blocks: list[BlockCost] = field(default_factory=list)
    # FSDP2 (fully_shard) splits every parameter along its first dimension, padded to a multiple of the devices.
    param_shapes: list[tuple[tuple[int, ...], bool]] = field(default_factory=list)

    def total_flops(self, training: bool = True) -> float:
        """Forward FLOPs per image: of the training forward (auxiliary head included), or of inference."""
        if not training and self.inference_flops is not None:
            return self.inference_flops
        return sum(s.flops for s in self.stages if training or not s.training_only)

    @property
    def params(self) -> int:
        return sum(s.params for s in self.stages)

    @property
    def trainable(self) -> int:
        return sum(s.trainable for s in self.stages)

    def inference_bytes(self) -> float:
        """Inference memory of ``batch`` images: the largest input + output of any one layer, plus the weights."""
        return max((s.infer_bytes for s in self.stages), default=0.0) * self.batch + 4.0 * self.params

    def backward_stages(self) -> list[StageCost]:
        """The stages the backward pass runs through: from the first one that trains on (in forward order)."""
        first = next((i for i, s in enumerate(self.stages) if s.trainable), len(self.stages))
        return self.stages[first:]

    def table(self) -> str:
        """The estimate as a text table with totals."""
        gf, mib = 1e9, 2**20
        b = self.batch
        head = (f"{'stage':30s} {'tokens':>8s} {'attends':>8s} {'attn GFLOPs':>12s} {'other GFLOPs':>13s} "
                f"{'params M':>9s} {'train act MiB':>14s}")  # fmt: skip
        lines = [f"input {self.size[0]}x{self.size[1]}, batch {b}; forward FLOPs per image", head, "-" * len(head)]
        for s in self.stages:
            name = s.name + (" (train only)" if s.training_only else "")
            tokens = str(s.tokens) if s.tokens else ""
            context = ("all" if s.context == s.tokens else str(s.context)) if s.context else ""
            lines.append(f"{name:30s} {tokens:>8s} {context:>8s} {s.attn_flops / gf:12.2f} {s.other_flops / gf:13.2f} "
                         f"{s.params / 1e6:9.2f} {s.train_bytes * b / mib:14.1f}")  # fmt: skip
        lines.append("-" * len(head))
        attn = sum(s.attn_flops for s in self.stages)
        train_act = sum(s.train_bytes for s in self.backward_stages()) * b
        infer_act = max((s.infer_bytes for s in self.stages), default=0.0) * b
        fwd_train, fwd_infer = self.total_flops(True), self.total_flops(False)
        bwd = 2 * sum(s.flops for s in self.backward_stages())
        frozen = self.params - self.trainable
        lines += [
            f"{'total':30s} {'':8s} {'':8s} {attn / gf:12.2f} {(fwd_train - attn) / gf:13.2f} "
            f"{self.params / 1e6:9.2f} {train_act / mib:14.1f}",
            "",
            f"forward, inference: {fwd_infer / gf:.2f} GFLOPs per image; "
            f"training step (forward + backward ~ 2x the forward it runs through): "
            f"{(fwd_train + bwd) * b / 1e12:.3f} TFLOPs per batch of {b}"
            + (f" ({frozen / 1e6:.2f} M parameters frozen)" if frozen else ""),
            f"memory, training: ~{(train_act + 4 * self.params + 12 * self.trainable) / mib:.0f} MiB (activations "
            f"{train_act / mib:.0f} + weights, gradients and AdamW moments "
            f"{(4 * self.params + 12 * self.trainable) / mib:.0f}); inference: "
            f"~{(infer_act + 4 * self.params) / mib:.0f} MiB (largest layer {infer_act / mib:.0f} + weights "
            f"{4 * self.params / mib:.0f}), at {self.bytes_per_value} bytes per value",
        ]
        return "\n".join(lines)


def _is_attention(module: nn.Module) -> bool:
    """A timm attention layer: holds ``num_heads`` and a qkv projection (ViT, DeiT, Swin windows, EVA, DINOv2)."""
    return hasattr(module, "num_heads") and any(hasattr(module, n) for n in ("qkv", "q_proj", "q"))


def _linear_flops(module: nn.Linear, out: torch.Tensor) -> float:
    return 2.0 * out.numel() / module.out_features * module.in_features * module.out_features


def _conv_flops(module: nn.Conv2d | nn.ConvTranspose2d, inp: torch.Tensor, out: torch.Tensor) -> float:
    kernel = module.weight.shape[2] * module.weight.shape[3]
    if isinstance(module, nn.ConvTranspose2d):  # each input pixel scatters into a kernel-sized patch
        return 2.0 * inp.numel() * module.out_channels / module.groups * kernel
    return 2.0 * out.numel() * module.in_channels / module.groups * kernel


def task_backbone(task: nn.Module) -> Backbone:
    """The ``Backbone`` of a vitdense task (its ``backbone`` submodule)."""
    backbone = task.get_submodule("backbone")
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{type(task).__name__}.backbone is a {type(backbone).__name__}, not a vitdense Backbone.")
    return backbone


def stage_modules(task: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """``(name, module, training_only)`` for each stage: the backbone's stem, its blocks (grouped into the stages
    that end at its ``out_indices`` for plain ViTs) or hierarchical stages, then every other top-level module."""
    backbone = task_backbone(task)
    model = backbone.model
    stages: list[tuple[str, nn.Module, bool]] = []
    for child_name, child in model.named_children():
        if child_name in _STAGE_CONTAINERS and isinstance(child, nn.Sequential | nn.ModuleList):
            blocks = list(child)
            if backbone.hierarchical or child_name != "blocks":
                stages += [(f"backbone.{child_name}.{i}", block, False) for i, block in enumerate(blocks)]
                continue
            ends = sorted({i % len(blocks) for i in backbone.out_indices} | {len(blocks) - 1})
            start = 0
            for end in ends:
                group = nn.ModuleList(blocks[start : end + 1])
                label = f"backbone.blocks.{start}" + (f"-{end}" if end > start else "")
                stages.append((label, group, False))
                start = end + 1
        elif not isinstance(child, nn.Identity):
            stages.append((f"backbone.{child_name}", child, False))
    direct = [p for n, p in model.named_parameters(recurse=False)]
    if direct:  # cls / register tokens, pos-embed
        holder = nn.Module()
        holder.tokens = nn.ParameterList(direct)
        stages.insert(0, ("backbone.tokens", holder, False))
    for name, child in task.named_children():
        if name in ("backbone", "metrics") or child is None:
            continue
        if name == "detector":
            stages += [(f"detector.{n}", c, False) for n, c in child.named_children() if n != "transform"]
            continue
        stages.append((name, child, name.startswith("aux")))
    return stages


def estimate(task: nn.Module, size: tuple[int, int], batch: int = 1) -> Estimate:
    """The per-stage cost of ``task`` (a vitdense task) on one ``size`` image, from a forward pass on ``meta``.

    Segmentation runs its training forward (the auxiliary head included, marked training only) with the logits
    resized to the input; classification its forward; detection its body and dense head (RetinaNet/FCOS head or
    the RPN head; the RoI box head, anchors and box decoding are left out).
    """
    meta = _meta_copy(task)
    if getattr(task, "unfreeze_at_epoch", None) is not None and not task_backbone(task).adapters:
        task_backbone(meta).requires_grad_(True)  # the cost once the backbone trains
    inference = estimate_forward(meta, size, training=False)
    result = estimate_forward(meta, size, training=True)
    result.batch, result.inference_flops = batch, inference.total_flops()
    return result


def inference_estimate(task: nn.Module, size: tuple[int, int]) -> Estimate:
    """The eval-mode cost of ``task`` on one ``size`` image (``estimate`` without its training forward)."""
    return estimate_forward(_meta_copy(task), size, training=False)


def estimate_forward(meta: nn.Module, size: tuple[int, int], training: bool) -> Estimate:
    """The per-stage cost of one forward pass of a task already on the meta device, in training or eval mode."""
    meta.train(training)
    stages = stage_modules(meta)
    costs: dict[str, StageCost] = {}
    owner: dict[nn.Module, StageCost] = {}
    counted: set[int] = set()  # a parameter counts once (a detector's body holds the backbone again)
    for name, module, training_only in stages:
        cost = costs[name] = StageCost(name, training_only=training_only)
        fresh = [p for p in module.parameters() if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        cost.params = sum(p.numel() for p in fresh)
        cost.trainable = sum(p.numel() for p in fresh if p.requires_grad)
        for sub in module.modules():
            owner.setdefault(sub, cost)
    blocks: dict[nn.Module, BlockCost] = {}
    block_of: dict[nn.Module, BlockCost] = {}
    for module in task_backbone(meta).model.modules():
        if type(module).__name__.endswith("Block") and module not in block_of:
            record = blocks[module] = BlockCost(
                params=sum(p.numel() for p in module.parameters()),
                trainable=any(p.requires_grad for p in module.parameters()),
            )
            for sub in module.modules():
                block_of.setdefault(sub, record)
    images = torch.zeros(1, task_backbone(meta).in_chans, *size, device="meta")
    resize_cost = StageCost("logits resize")
    active: list[StageCost] = []
    handles = []

    def pre(module: nn.Module, args: Any) -> None:
        active.append(owner.get(module, active[-1] if active else resize_cost))

    def post(module: nn.Module, args: Any, out: Any) -> None:
        cost = active.pop()
        inp = args[0] if args and torch.is_tensor(args[0]) else None
        if isinstance(module, nn.Linear) and torch.is_tensor(out):
            cost.other_flops += _linear_flops(module, out)
        elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and inp is not None:
            cost.other_flops += _conv_flops(module, inp, out)
        elif _is_attention(module) and inp is not None and inp.ndim == 3:
            windows, n, dim = inp.shape  # (images x windows, tokens per window, channels)
            cost.attn_flops += 4.0 * windows * n * n * dim
            cost.tokens, cost.context = max(cost.tokens, windows * n), n
        if module in blocks and inp is not None:
            blocks[module].input_bytes = inp.numel() * 4
        leaf = not any(True for _ in module.children()) and not isinstance(module, nn.Identity | nn.Dropout)
        if torch.is_tensor(out) and leaf:
            values = out.numel() * 4
            cost.train_bytes += values
            if module in block_of and cost is not resize_cost:
                block_of[module].train_bytes += values
            cost.infer_bytes = max(cost.infer_bytes, values + (inp.numel() * 4 if inp is not None else 0))

    for module in meta.modules():
        if module is not meta:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad(), resize.record_resizes(lambda: active[-1] if active else None) as resizes:
            _forward(meta, images)
    finally:
        for handle in handles:
            handle.remove()
    for cost_owner, flops in _resize_flops(resizes):
        (cost_owner or resize_cost).other_flops += flops
    # Rows that cost nothing (dropout, identity placeholders) are left out.
    kept = [c for c in costs.values() if c.flops or c.params or c.train_bytes]
    shapes = [(tuple(p.shape), p.requires_grad) for p in {id(p): p for p in meta.parameters()}.values()]
    return Estimate(size=size, batch=1, stages=kept + ([resize_cost] if resize_cost.flops else []),
                    blocks=list(blocks.values()), param_shapes=shapes)  # fmt: skip


def _meta_copy(task: nn.Module) -> nn.Module:
    """A copy of the task on the meta device."""
    import copy

    return copy.deepcopy(task).to("meta")


def _forward(task: nn.Module, images: torch.Tensor) -> None:
    forward_train = getattr(task, "forward_train", None)
    if forward_train is not None:
        forward_train(images)
    elif hasattr(task, "detector"):
        detector = task.get_submodule("detector")
        features = list(detector.get_submodule("backbone")(images).values())
        head = getattr(detector, "head", None) or detector.get_submodule("rpn.head")
        head(features)
    else:
        task(images)


def _resize_flops(resizes: list[tuple[Any, tuple[int, ...], int, int]]):
    for owner_cost, shape, keep_h, keep_w in resizes:
        *lead, in_h, in_w = shape
        maps = 1
        for d in lead:
            maps *= d
        # (keep_h x in_h) @ (in_h x in_w), then (keep_h x in_w) @ (in_w x keep_w), per map
        yield owner_cost, 2.0 * maps * keep_h * in_w * (in_h + keep_w)


def input_size(datamodule: Any, task: Any, override: list[int] | None = None) -> tuple[int, int]:
    """The training input size: ``override``, else the DataModule's crop or image size, else the backbone's."""
    if override:
        return (override[0], override[-1])
    for key in ("crop_size", "image_size"):
        value = getattr(datamodule, key, None)
        if isinstance(value, int):
            return (value, value)
    return task.input_size()
