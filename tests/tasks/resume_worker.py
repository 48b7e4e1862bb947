"""For the resume tests: a task whose best epoch comes first, callbacks that record each step's learning rates and
kill the process at a given step.

A config names them as ``tests.tasks.resume_worker.*``; test_resume.py runs its fits in-process and in a fork.
"""

import json
import os
import signal

import lightning.pytorch as L

from vitdense import ClassificationTask


class EarlyPeakTask(ClassificationTask):
    """A classifier whose monitored metric, ``val/early`` (minus the global step), is best at its first validation:
    the best checkpoint is written then and never again, and ``last.ckpt`` must still follow the fit."""

    monitor = "val/early"
    monitor_mode = "max"

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val/early", -float(self.global_step))


class LrRecorder(L.Callback):
    """Appends ``{"step", "lrs", "backbone_trainable"}`` per training batch to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
        trainable = all(p.requires_grad for p in pl_module.backbone.parameters())
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "lrs": lrs, "backbone_trainable": trainable}) + "\n")


class KillAt(L.Callback):
    """SIGKILLs its own process when training reaches ``step`` (no clean-up, as a crash or a pre-emption)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
