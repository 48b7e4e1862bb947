"""Freezing the backbone for a linear probe, and unfreezing it later with its own (layer-decayed) lr groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer

from vitdense.tasks.optim import backbone_param_groups

if TYPE_CHECKING:
    from vitdense.tasks.base import BaseTask


class BackboneUnfreeze(BaseFinetuning):
    """Keeps the backbone frozen (out of the optimizer, norms in eval) until ``unfreeze_at_epoch``.

    At that epoch the backbone joins the optimizer with the same parameter groups it would have had from the start
    (layer-wise lr decay, no decay on norms/biases/tokens), following the running schedule.

    Args:
        unfreeze_at_epoch: epoch at which the backbone starts training.
    """

    def __init__(self, unfreeze_at_epoch: int) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch

    def freeze_before_training(self, pl_module: BaseTask) -> None:
        pl_module.set_backbone_frozen(True)

    def finetune_function(self, pl_module: BaseTask, epoch: int, optimizer: Optimizer) -> None:
        if epoch != self.unfreeze_at_epoch:
            return
        pl_module.set_backbone_frozen(False)
        cfg = pl_module.optimizer_cfg
        scheduler = pl_module.lr_schedulers()
        for group in backbone_param_groups(pl_module.backbone.model, cfg["weight_decay"], cfg["layer_decay"]):
            group["initial_lr"] = cfg["lr"] * group["lr_scale"]
            if scheduler is not None and hasattr(scheduler, "lr_lambdas"):
                factor = scheduler.lr_lambdas[0]
                scheduler.base_lrs.append(group["initial_lr"])
                scheduler.lr_lambdas.append(factor)
                group["lr"] = group["initial_lr"] * factor(scheduler.last_epoch)
            else:
                group["lr"] = group["initial_lr"]
            optimizer.add_param_group(group)
