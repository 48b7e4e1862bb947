"""Parameter groups (layer-wise lr decay, no decay on norms/biases/tokens) and warmup + poly/cosine schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, TypedDict

import torch
from torch import nn

from vitdense.models.backbone import Backbone
from vitdense.models.layer_decay import layer_scales


class OptimizerConfig(TypedDict, total=False):
    """AdamW settings under ``model.init_args.optimizer``.

    Keys: ``lr`` (base learning rate), ``weight_decay``, ``layer_decay`` (layer-wise lr decay factor for the
    backbone, e.g. 0.65; null = off), ``head_lr_mult`` (lr multiplier for neck and head), ``betas``, ``eps``.
    """

    lr: float
    weight_decay: float
    layer_decay: float | None
    head_lr_mult: float
    betas: tuple[float, float]
    eps: float


class SchedulerConfig(TypedDict, total=False):
    """Learning-rate schedule under ``model.init_args.scheduler``, stepped per optimizer step.

    Keys: ``name`` (poly, cosine or constant after warmup), ``warmup_steps`` (linear warmup length),
    ``warmup_ratio`` (lr factor at step 0), ``power`` (poly exponent), ``min_lr_ratio`` (final lr / base lr).
    """

    name: Literal["poly", "cosine", "constant"]
    warmup_steps: int
    warmup_ratio: float
    power: float
    min_lr_ratio: float


OPTIMIZER_DEFAULTS: OptimizerConfig = {
    "lr": 1e-4,
    "weight_decay": 0.05,
    "layer_decay": None,
    "head_lr_mult": 1.0,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
}
SCHEDULER_DEFAULTS: SchedulerConfig = {
    "name": "poly",
    "warmup_steps": 0,
    "warmup_ratio": 1e-6,
    "power": 1.0,
    "min_lr_ratio": 0.0,
}


def merge_config(given: dict | None, defaults: dict, what: str) -> dict:
    """``defaults`` updated with ``given``; unknown keys are an error naming the valid ones."""
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"Unknown {what} key(s) {sorted(unknown)}; valid keys are {sorted(defaults)}.")
    return {**defaults, **given}


def resolve_optimizer_config(cfg: dict | None) -> dict:
    """Fill defaults and reject unknown keys."""
    return merge_config(cfg, dict(OPTIMIZER_DEFAULTS), "optimizer")


def resolve_scheduler_config(cfg: dict | None) -> dict:
    """Fill defaults and reject unknown keys."""
    return merge_config(cfg, dict(SCHEDULER_DEFAULTS), "scheduler")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")


def head_param_groups(modules: Iterable[nn.Module], weight_decay: float, lr_scale: float) -> list[dict]:
    """Two groups for non-backbone modules: with and without weight decay, both at ``lr_scale``."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale, "name": "head"},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale, "name": "head_no_decay"},
    ]
    return [g for g in groups if g["params"]]


def backbone_param_groups(backbone: Backbone, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """One group per (layer, decay or not) of the backbone, with lr scales by the BEiT rule on the whole model.

    No weight decay on norms, biases and what timm's ``no_weight_decay`` names (pos-embed, prefix tokens,
    relative-position tables). Frozen parameters are included: the optimizer skips them while they have no
    gradient, so unfreezing needs no new groups (see ``vitdense.models.layer_decay`` for the layer numbering).
    """
    model = backbone.model
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    scales = layer_scales(backbone.layer_ids, backbone.head_layer_id, layer_decay)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        decay = not (_no_decay(name, p) or name in skip)
        layer = backbone.layer_ids[name]
        group = groups.setdefault((layer, decay), {
            "params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scales[name],
            "name": f"backbone_layer{layer:02d}_{'decay' if decay else 'no_decay'}",
        })  # fmt: skip
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_adamw(groups: list[dict], cfg: dict) -> torch.optim.Optimizer:
    """AdamW with each group's lr = base lr x its ``lr_scale``.

    The fused kernel runs where PyTorch has one for every parameter's device (CPU and CUDA): one pass over each
    tensor instead of a loop of element-wise operations (on 2 CPU cores, 25 ms instead of 84 ms a step for 35 M
    parameters; the same updates to float rounding).
    """
    for g in groups:
        g["lr"] = cfg["lr"] * g.get("lr_scale", 1.0)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], fused=fused or None)


def lr_lambda(cfg: dict, total_steps: int):
    """Factor of each group's lr at a given optimizer step: linear warmup, then poly / cosine / constant."""
    warmup, name = int(cfg["warmup_steps"]), cfg["name"]
    total = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            ratio = cfg["warmup_ratio"]
            return ratio + (1.0 - ratio) * step / warmup
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        decay = (1.0 - progress) ** cfg["power"] if name == "poly" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg["min_lr_ratio"] + (1.0 - cfg["min_lr_ratio"]) * decay

    return factor
