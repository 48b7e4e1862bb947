"""BaseTask: what every vitdense task shares (backbone config, one step for all stages, metrics, optimisation)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Generic, TypeVar, cast

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torchmetrics import Metric, MetricCollection

import vitdense.cost.estimate  # noqa: F401  (registers the CPU attention FLOPs that the model summary counts)
from vitdense.models.adapters import is_adapter
from vitdense.models.backbone import Backbone, BackboneConfig, resolve_backbone_config
from vitdense.models.weights import FROZEN_BASE_KEY
from vitdense.tasks import sharding
from vitdense.tasks.training import (
    BackboneUnfreeze,
    OptimizerConfig,
    SchedulerConfig,
    configure_optimization,
    resolve_optimizer_config,
    resolve_scheduler_config,
    set_frozen,
    warmup_too_long,
)


def group_indices(keys: Iterable[Hashable]) -> list[list[int]]:
    """Positions grouped by equal key, in order of first appearance (e.g. images of one size, run together)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# The metric a task keeps per stage (configure_metrics), as its compute_metrics receives it.
M = TypeVar("M", bound=Metric | MetricCollection)


class BaseTask(L.LightningModule, Generic[M]):
    """Base LightningModule: subclasses build ``self.backbone`` plus their own modules and define ``shared_step``.

    Subclasses set ``monitor`` (the metric ModelCheckpoint follows) and implement ``configure_models``,
    ``configure_metrics`` (one metric for one stage; cloned for val and test), ``shared_step`` and
    ``compute_metrics``.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"

    def __init__(
        self,
        backbone: str | BackboneConfig = "vit_base_patch16_224",
        num_classes: int = 2,
        class_names: list[str] | None = None,
        optimizer: OptimizerConfig | OptimizerCallable | None = None,
        scheduler: SchedulerConfig | LRSchedulerCallable | None = None,
        pretrained: bool | str | None = None,
        img_size: int | None = None,
        in_chans: int | None = None,
        freeze_backbone: bool = False,
        unfreeze_at_epoch: int | None = None,
        ema_decay: float | None = None,
        grad_checkpointing: bool = False,
        compile: bool = False,
        channels_last: bool = False,
        log_images: int = 8,
    ) -> None:
        """Build the model; the task's own arguments are read from ``self.hparams`` by its hooks.

        Args:
            backbone: a timm model name, or a dict with name, pretrained, img_size, drop_path_rate, out_indices,
                model_kwargs.
            num_classes: number of classes (linked from the DataModule in the CLI).
            class_names: class names for per-class metrics and predictions (linked from the DataModule in the CLI).
            optimizer: AdamW settings (lr, weight_decay, layer_decay, head_lr_mult, betas, eps), or any optimizer as
                class_path + init_args, which gets the same parameter groups (no decay on norms/biases/tokens).
            scheduler: schedule (name: poly|cosine|constant, warmup_steps, warmup_ratio, power, min_lr_ratio), or
                any lr scheduler as class_path + init_args (stepped per epoch).
            pretrained: shorthand for backbone.pretrained (true, false or a local weights file).
            img_size: shorthand for backbone.img_size (pretraining pos-embeds are resampled to it); the CLI links it
                from the data's training crop (data.crop_size or data.image_size).
            in_chans: shorthand for backbone.in_chans (input bands); the CLI links it from the data (the number of
                data.bands, 3 for RGB images).
            freeze_backbone: train only neck and head (linear probe); the backbone stays in eval mode.
            unfreeze_at_epoch: start with the backbone frozen and train it from this epoch on.
            ema_decay: keep an exponential moving average of the weights (e.g. 0.999), used for validation and
                checkpoints.
            grad_checkpointing: recompute backbone activations in the backward pass to save memory.
            compile: ``torch.compile`` the backbone, neck and heads when the Trainer sets the model up (the first
                steps then take longer while the graphs compile; a new input size compiles again). Off by default:
                it pays on GPUs, rarely on CPUs.
            channels_last: keep images and convolution weights in channels-last memory layout (faster convolutions
                on recent GPUs under mixed precision).
            log_images: val images drawn with the model's predictions after each validation of a fit and logged as
                ``val/panels`` to the loggers that take images (TensorBoard, MLflow, W&B); 0 = off
                (``vitdense.tasks.panels``).
        """
        super().__init__()
        # Saved first: the hooks below (configure_models, ...) read the subclass's own arguments from hparams.
        self.save_hyperparameters()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}.")
        if freeze_backbone and unfreeze_at_epoch is not None:
            raise ValueError(
                "freeze_backbone: true keeps the backbone frozen for the whole run; unfreeze_at_epoch "
                f"({unfreeze_at_epoch}) trains it from that epoch on. Set only one of them."
            )
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.backbone_cfg = resolve_backbone_config(backbone, pretrained=pretrained, img_size=img_size,
                                                    in_chans=in_chans)  # fmt: skip
        # A dict configures vitdense's AdamW / schedules; a LightningCLI callable (class_path + init_args in YAML)
        # replaces them and still receives the same parameter groups.
        self.optimizer_fn = optimizer if callable(optimizer) else None
        self.scheduler_fn = scheduler if callable(scheduler) else None
        self.optimizer_cfg = resolve_optimizer_config(None if callable(optimizer) else optimizer)
        self.scheduler_cfg = resolve_scheduler_config(None if callable(scheduler) else scheduler)
        self.backbone = self.build_backbone()
        self.configure_models()
        metric = self.configure_metrics()
        self.metrics = nn.ModuleDict({s: metric.clone() for s in ("val", "test")}) if metric is not None else None
        self.freeze_backbone = freeze_backbone
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.ema_decay = ema_decay
        self.backbone_frozen = False
        # With unfreeze_at_epoch the BackboneUnfreeze callback sets the state from the epoch (also on resume).
        self.set_backbone_frozen(freeze_backbone or unfreeze_at_epoch is not None)
        if grad_checkpointing:
            self.backbone.model.set_grad_checkpointing(True)
        self._speed_set_up = False
        # Per-image results of val/test steps, kept only while ``vitdense.evaluate`` sets this to a list.
        self.eval_records: list[dict[str, Any]] | None = None
        # Sum and count of val/test losses over the epoch's images, per stage (see log_loss).
        self._eval_loss: dict[str, tuple[Any, int]] = {}
        if not compile:
            # Lightning's model summary counts the forward FLOPs of this input (it would compile a graph just for it).
            self.example_input_array = self.example_input(self.input_size())

    def input_size(self) -> tuple[int, int]:
        """The backbone's configured input size (``img_size``), else its default."""
        size = self.backbone_cfg.get("img_size") or getattr(self.backbone.model, "img_size", None) or 224
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def example_input(self, size: tuple[int, int]) -> Any:
        """One image of ``size`` as ``forward`` takes it (for the model summary)."""
        return torch.zeros(1, self.backbone.in_chans, *size)

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, held in eval mode: no drop-path, norm statistics fixed) or unfreeze the backbone."""
        self.backbone_frozen = frozen
        set_frozen(self.backbone, frozen, self.training)

    def train(self, mode: bool = True) -> BaseTask:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def configure_callbacks(self) -> list[L.Callback]:
        callbacks: list[L.Callback] = []
        if self.unfreeze_at_epoch is not None:
            callbacks.append(BackboneUnfreeze(self.unfreeze_at_epoch))
        if self.ema_decay is not None:
            # Lightning swaps the averaged weights in for validation and for the saved checkpoints.
            callbacks.append(EMAWeightAveraging(decay=self.ema_decay))
        if self.hparams.get("log_images", 0) != 0:
            from vitdense.tasks.panels import PredictionPanels

            callbacks.append(PredictionPanels(self.hparams["log_images"]))
        from vitdense.tasks.summary import RunSummary

        callbacks.append(RunSummary())  # summary.json in the run folder when a fit ends
        return callbacks

    def setup(self, stage: str) -> None:
        """Memory layout and compilation, the first time a Trainer sets the model up (compilation itself is lazy)."""
        if self._speed_set_up:
            return
        if self.hparams.get("channels_last"):
            self.to(memory_format=torch.channels_last)
            self.backbone.memory_format = torch.channels_last  # images enter the first convolution channels-last
        if self.hparams.get("compile"):
            for module in self.compile_targets():
                module.compile()  # in place: parameter names and checkpoints are unchanged
        self._speed_set_up = True
        if stage == "fit":
            self.set_band_statistics()

    def set_band_statistics(self) -> None:
        """When fitting on multi-band rasters without ``backbone.mean``/``std``: normalise with the per-band mean and
        std of the training images (from the DataModule), kept in the hyperparameters, so that the checkpoint, a
        later ``test`` and an export normalise alike."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        stats = getattr(datamodule, "band_statistics", None)
        if stats is None or self.backbone_cfg.get("mean") is not None or self.backbone_cfg.get("std") is not None:
            return
        found = stats()
        if found is None:
            return
        mean, std = found
        if len(mean) != self.backbone.in_chans:
            raise ValueError(f"The data gives {len(mean)} bands but backbone.in_chans is {self.backbone.in_chans}.")
        self.backbone.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
        self.backbone.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
        self.backbone_cfg = {**self.backbone_cfg, "mean": list(mean), "std": list(std)}
        self.hparams["backbone"] = dict(self.backbone_cfg)
        text = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(mean, std, strict=True))
        rank_zero_info(f"[vitdense] band mean/std of the training images (saved with the run): {text}")

    def training_statistic(self, method: str, setting: str, needs: str, instead: str) -> Any:
        """The fitting DataModule's ``method`` (what a setting of ``auto`` reads from the training split), or an error
        naming the ``setting``, what it ``needs`` the DataModule to do and what to give ``instead``."""
        datamodule = getattr(self.trainer, "datamodule", None)
        found = getattr(datamodule, method, None)
        if found is None:
            raise ValueError(
                f"{setting} needs a DataModule that can {needs} ({type(datamodule).__name__} cannot); give {instead}."
            )
        return found()

    def compile_targets(self) -> list[nn.Module]:
        """The modules ``compile: true`` compiles: the tensor-only hot path (backbone, neck, heads)."""
        return [self.backbone, *self.head_modules()]

    def build_backbone(self) -> Backbone:
        """The backbone; dense tasks use the feature pyramid of a pruned timm model."""
        return Backbone(self.backbone_cfg)

    def configure_models(self) -> None:
        """Build the modules after the backbone (neck, heads, losses)."""
        raise NotImplementedError

    def configure_metrics(self) -> M | None:
        """One metric (or MetricCollection) for one stage."""
        return None

    def stage_metric(self, stage: str) -> M:
        """The metric of ``stage`` (val or test), from ``configure_metrics``."""
        if self.metrics is None:
            raise RuntimeError(f"{type(self).__name__} keeps no metrics: its configure_metrics returned None.")
        return cast(M, self.metrics[stage])  # ModuleDict's items are typed as plain Modules

    def compute_metrics(self, metric: M, stage: str) -> dict[str, torch.Tensor]:
        """Turn the accumulated metric of a stage into ``{"<stage>/<name>": value}``."""
        return {f"{stage}/{k}": v for k, v in metric.compute().items()}

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """Loss of one batch; updates ``self.metrics[stage]`` for val and test."""
        raise NotImplementedError

    def record(self, **fields: Any) -> None:
        """Keep one image's evaluation result (``index``: its position in the split) when records are on."""
        if self.eval_records is not None:
            self.eval_records.append({"index": len(self.eval_records), **fields})

    def log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """Log ``<stage>/loss``: per step and epoch in training; for val and test the mean over the images of the
        whole split, from sums over every process at the epoch's end (``_log_epoch_loss``). Lightning's
        ``sync_dist`` would average each process's mean, weighing the images of a process with fewer more."""
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
            return
        value = loss.detach().float() * batch_size
        total, count = self._eval_loss.get(stage, (0.0, 0))
        self._eval_loss[stage] = (value + total, count + batch_size)

    def _log_epoch_loss(self, stage: str) -> None:
        total, count = self._eval_loss.pop(stage, (0.0, 0))
        sums = torch.stack([torch.as_tensor(total, dtype=torch.float32, device=self.device).reshape(()),
                            torch.tensor(float(count), device=self.device)])  # fmt: skip
        if self._trainer is not None and self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # every process, with or without batches
        if sums[1] > 0:
            self.log(f"{stage}/loss", sums[0] / sums[1], prog_bar=True, sync_dist=False)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.shared_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        self._log_epoch_loss(stage)
        if self.metrics is None:
            return
        metric = self.stage_metric(stage)
        parts = metric.values() if isinstance(metric, MetricCollection) else [metric]
        updates = torch.tensor(float(sum(m.update_count for m in parts)), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            # A process may have no batch of an uneven split; computing syncs over all, so all decide alike.
            updates = self.trainer.strategy.reduce(updates, reduce_op="sum")
        if updates.item() == 0:
            return
        # The metric state is already reduced over all processes, so every rank logs the same numbers.
        self.log_dict(self.compute_metrics(metric, stage), sync_dist=False)
        # `validate`/`test` run under inference mode, fit's validation under no_grad: states re-created as
        # inference tensors could not be updated in place by a later fit in the same process.
        with torch.inference_mode(False):
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_model(self) -> None:
        """Under Lightning's ModelParallelStrategy: shard with FSDP2 (``vitdense.tasks.sharding``); else nothing."""
        if self.device_mesh is not None:
            sharding.shard(self, self.device_mesh)

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        sharding.gather(self)  # a sharded model evaluates whole: processes may get different numbers of batches

    def on_validation_model_train(self) -> None:
        sharding.release(self)
        super().on_validation_model_train()

    def on_test_model_eval(self) -> None:
        super().on_test_model_eval()
        sharding.gather(self)

    def on_predict_model_eval(self) -> None:
        super().on_predict_model_eval()
        sharding.gather(self)

    def head_modules(self) -> list[nn.Module]:
        """Modules trained at ``head_lr_mult`` (everything but the backbone)."""
        return [m for name, m in self.named_children() if name not in ("backbone", "metrics")]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        warning = warmup_too_long(self.scheduler_cfg, int(total)) if self.scheduler_fn is None else None
        # Trainer.fast_dev_run is set by Lightning's connectors, undeclared on Trainer.
        if warning and self._trainer is not None and not self.trainer.fast_dev_run:  # type: ignore[attr-defined]
            rank_zero_warn(f"[vitdense] {warning}")
        return configure_optimization(
            None if self.freeze_backbone else self.backbone, self.head_modules(), self.optimizer_cfg,
            self.scheduler_cfg, int(total), self.optimizer_fn, self.scheduler_fn, self.monitor,
        )  # fmt: skip

    def frozen_base_keys(self) -> list[str]:
        """State-dict keys of the backbone's frozen pretrained weights when it trains LoRA adapters (else none).

        Only weights that come back the same from ``backbone.pretrained`` (hub or file) are left out of checkpoints;
        a randomly initialised base (``pretrained: false``) would be another random draw when the run is loaded, so
        it is kept.
        """
        if not self.backbone.adapters or not self.backbone_cfg.get("pretrained"):
            return []
        frozen = {id(p) for name, p in self.backbone.model.named_parameters() if not is_adapter(name)}
        return [key for key, t in self.state_dict(keep_vars=True).items() if id(t) in frozen]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With adapters, leave the frozen pretrained weights out: a checkpoint holds what training changed (adapters,
        neck, heads) and the config; the base weights come back from ``backbone.pretrained`` when it loads."""
        keys = self.frozen_base_keys()
        for key in keys:
            checkpoint["state_dict"].pop(key, None)
        if keys:
            checkpoint[FROZEN_BASE_KEY] = keys

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        dropped = checkpoint.get(FROZEN_BASE_KEY)
        if dropped:
            if not self.backbone.adapters:
                raise ValueError(
                    "The checkpoint holds LoRA adapters without their frozen base weights, but this run's backbone "
                    "has no backbone.peft: use the config the checkpoint was trained with."
                )
            own = self.state_dict()
            checkpoint["state_dict"].update({key: own[key] for key in dropped})
        hp = checkpoint.get("hyper_parameters", {})
        saved = hp.get("num_classes")
        if saved is not None and saved != self.num_classes:
            names = hp.get("class_names")
            raise ValueError(
                f"The checkpoint was trained with num_classes={saved}"
                + (f" ({', '.join(map(str, names))})" if names else "")
                + f", but this run is configured with num_classes={self.num_classes}. "
                "Set data.num_classes (or classes.txt) to match the checkpoint, or load the backbone only "
                "with backbone.pretrained to fine-tune for a new set of classes."
            )
