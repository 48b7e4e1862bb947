"""Training utilities in one place: parameter groups (layer-wise lr decay, no decay on norms/biases/tokens), AdamW,
warmup + poly/cosine schedules, and freezing / unfreezing the backbone (``BackboneUnfreeze``).

``BaseTask.configure_optimizers`` and the unfreeze callback both use them; nothing here imports a task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

import lightning.pytorch as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vitdense.models.backbone import Backbone
from vitdense.models.config import merge_config
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


def resolve_optimizer_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and reject unknown keys and a learning rate that is not positive."""
    resolved = merge_config(cfg, dict(OPTIMIZER_DEFAULTS), "optimizer")
    if not resolved["lr"] > 0:  # torch would say "Invalid learning rate" only when the fit starts, naming no key
        raise ValueError(
            f"model.init_args.optimizer.lr is {resolved['lr']}; a learning rate must be > 0 (e.g. 1e-4, the default)."
        )
    return resolved


def resolve_scheduler_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and reject unknown keys."""
    return merge_config(cfg, dict(SCHEDULER_DEFAULTS), "scheduler")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(".bias")


def head_param_groups(modules: Iterable[nn.Module], weight_decay: float, lr_scale: float) -> list[dict]:
    """Two groups for non-backbone modules: with and without weight decay, both at ``lr_scale``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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


def warmup_too_long(scheduler_cfg: dict, total_steps: int) -> str | None:
    """What to say when the linear warmup takes half of the run or more, else ``None``.

    The templates' warmups are counted in steps (100 for the segmentation and detection templates), sized for their
    own epochs; a small dataset or a short run can leave the lr at its peak for a few steps, or never. It is said, not
    changed: where measured, shortening the warmup of a short run did not help (the long warmup there acts as a lower
    lr), and training for the template's epochs did.
    """
    warmup, total = int(scheduler_cfg.get("warmup_steps", 0)), int(total_steps)
    if warmup <= 0 or total <= 0 or 2 * warmup < total:
        return None
    peak = "never reaches its peak" if warmup >= total else f"reaches its peak only at step {warmup}"
    return (
        f"scheduler.warmup_steps {warmup} is {100 * warmup / total:.0f}% of this run's {total} optimizer steps: the "
        f"lr {peak}. The templates' warmups are sized for their own epochs: train longer (trainer.max_epochs), or "
        "change model.init_args.scheduler.warmup_steps knowingly (a warmup cut to 10% of a short run scored lower "
        "on the small detection and classification sets measured: docs/recipes.md)."
    )


def planned_steps(trainer_cfg: dict, train_samples: int, batch_size: int) -> tuple[int, str]:
    """Optimizer steps a config's trainer section asks for on one device, and how they were counted.

    As Lightning counts them: the smaller of ``max_steps`` (when set) and ``max_epochs`` (Lightning's default 1000
    when neither is set) x the training batches per epoch (whole batches where there is more than one: vitdense
    drops the last partial batch) / ``accumulate_grad_batches``. With N devices each epoch has about 1/N of the
    batches.
    """
    max_steps, max_epochs = int(trainer_cfg.get("max_steps") or -1), trainer_cfg.get("max_epochs")
    if max_steps > 0 and max_epochs in (None, -1):
        return max_steps, f"trainer.max_steps {max_steps}"
    epochs = int(max_epochs or 1000)
    batches = train_samples // batch_size if train_samples > batch_size else 1
    accumulate = int(trainer_cfg.get("accumulate_grad_batches") or 1)
    steps = epochs * max(1, math.ceil(batches / accumulate))
    how = f"trainer.max_epochs {epochs} x {batches} batches of {batch_size} ({train_samples} training images)"
    how += f" / accumulate_grad_batches {accumulate}" if accumulate > 1 else ""
    if 0 < max_steps < steps:  # Lightning stops at whichever comes first
        return max_steps, f"trainer.max_steps {max_steps}, before {how} = {steps}"
    return steps, how


def configure_optimization(
    backbone: Backbone | None,
    heads: list[nn.Module],
    optimizer_cfg: dict,
    scheduler_cfg: dict,
    total_steps: int,
    optimizer_fn: Any = None,
    scheduler_fn: Any = None,
    monitor: str = "val/loss",
) -> OptimizerLRSchedulerConfig:
    """Optimizer and lr schedule for Lightning's ``configure_optimizers``.

    Args:
        backbone: the backbone, or ``None`` to leave it out (a linear probe). With ``unfreeze_at_epoch`` its groups
            are there from the start (the optimizer skips parameters without gradients), so the schedule, a
            replaced optimizer's settings and a resumed optimizer state cover them whatever the epoch.
        heads: modules trained at ``head_lr_mult`` x lr.
        optimizer_cfg: resolved AdamW settings (``resolve_optimizer_config``).
        scheduler_cfg: resolved schedule (``resolve_scheduler_config``), stepped per optimizer step.
        total_steps: optimizer steps of the run (for poly / cosine).
        optimizer_fn: a LightningCLI optimizer callable that replaces AdamW; it gets the same groups (lr scaled,
            weight decay off where the rule says so).
        scheduler_fn: a LightningCLI lr scheduler callable that replaces the schedule (stepped per epoch).
        monitor: the metric a plateau scheduler follows.
    """
    cfg = optimizer_cfg
    groups = [] if backbone is None else backbone_param_groups(backbone, cfg["weight_decay"], cfg["layer_decay"])
    groups += head_param_groups(heads, cfg["weight_decay"], cfg["head_lr_mult"])
    if optimizer_fn is not None:
        optimizer = optimizer_fn([{k: v for k, v in g.items() if k != "weight_decay"} for g in groups])
        decay = optimizer.defaults.get("weight_decay", 0.0)
        for group, spec in zip(optimizer.param_groups, groups, strict=True):
            group["lr"] = optimizer.defaults["lr"] * spec["lr_scale"]
            group["weight_decay"] = decay if spec["weight_decay"] else 0.0
    else:
        optimizer = build_adamw(groups, cfg)
    if scheduler_fn is not None:
        scheduler = scheduler_fn(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(scheduler_cfg, int(total_steps)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def set_frozen(module: nn.Module, frozen: bool, training: bool) -> None:
    """Freeze a module (no gradients, held in eval mode: no drop-path, norm statistics fixed) or unfreeze it
    (back to ``training`` mode)."""
    module.requires_grad_(not frozen)
    module.train(training and not frozen)


@runtime_checkable
class FreezableTask(Protocol):
    """What ``BackboneUnfreeze`` needs of a task."""

    backbone_frozen: bool

    def set_backbone_frozen(self, frozen: bool) -> None: ...


class BackboneUnfreeze(L.Callback):
    """Keeps the backbone frozen (no gradients, norms in eval) before ``unfreeze_at_epoch`` and trains it after.

    The backbone's parameter groups are in the optimizer from the start (see ``BaseTask.configure_optimizers``),
    so the state follows from the epoch alone: a run resumed after the unfreeze epoch trains the backbone with the
    restored optimizer and schedule. DDP only all-reduces parameters that required gradients when it wrapped the
    model, so the model is wrapped again when the state changes.

    Args:
        unfreeze_at_epoch: epoch at which the backbone starts training.
    """

    def __init__(self, unfreeze_at_epoch: int) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and not isinstance(trainer.strategy.model, DistributedDataParallel):
            raise ValueError(
                f"model.unfreeze_at_epoch works on one device and with strategy ddp, not with "
                f"{type(trainer.strategy).__name__}: train the backbone from the start, or keep it frozen with "
                "freeze_backbone: true."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch.
        self._follow_epoch(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._follow_epoch(trainer, pl_module)

    def _follow_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, FreezableTask):
            raise TypeError(
                f"BackboneUnfreeze needs a vitdense task (backbone_frozen, set_backbone_frozen), not "
                f"{type(pl_module).__name__}: set model.init_args.unfreeze_at_epoch instead of adding the callback."
            )
        frozen = trainer.current_epoch < self.unfreeze_at_epoch
        if frozen == pl_module.backbone_frozen:
            return
        pl_module.set_backbone_frozen(frozen)
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel):
            # The old wrapper (and its gradient hooks) is released when the new one replaces it.
            strategy.model = strategy._setup_model(pl_module)
            strategy._register_ddp_hooks()
