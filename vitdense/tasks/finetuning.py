"""Unfreezing the backbone at an epoch, on one device or under DDP, also when a run resumes past that epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as L
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from vitdense.tasks.base import BaseTask


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

    def on_fit_start(self, trainer: L.Trainer, pl_module: BaseTask) -> None:
        if trainer.world_size > 1 and not isinstance(trainer.strategy.model, DistributedDataParallel):
            raise ValueError(
                f"model.unfreeze_at_epoch works on one device and with strategy ddp, not with "
                f"{type(trainer.strategy).__name__}: train the backbone from the start, or keep it frozen with "
                "freeze_backbone: true."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: BaseTask) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch.
        self._follow_epoch(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: BaseTask) -> None:
        self._follow_epoch(trainer, pl_module)

    def _follow_epoch(self, trainer: L.Trainer, pl_module: BaseTask) -> None:
        frozen = trainer.current_epoch < self.unfreeze_at_epoch
        if frozen == pl_module.backbone_frozen:
            return
        pl_module.set_backbone_frozen(frozen)
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel):
            # The old wrapper (and its gradient hooks) is released when the new one replaces it.
            strategy.model = strategy._setup_model(pl_module)
            strategy._register_ddp_hooks()
