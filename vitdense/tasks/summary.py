"""The run summary at the end of a fit: best metric and its epoch, wall time, training images per second, peak memory
and where the checkpoints are; printed and saved as ``summary.json`` in the run folder.

The best metric is the ``ModelCheckpoint`` callback's best score (what ``best*.ckpt`` holds), and its epoch and step
come from the values of the monitored metric this callback saw after each validation. The wall time runs from the
fit's start: a task makes its ``RunSummary`` in ``configure_callbacks``, which ``Trainer.fit`` calls before the data,
model and optimizer are set up, so a fit that fails there reports its own seconds too. Images per second count the
training images of every process over the training time (from the first training batch on, less validation). Peak
memory is the CUDA
allocator's peak on the first device, on CPU the process's peak resident set (``ru_maxrss``, since the process
started, so it includes whatever ran before the fit in the same process).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

SUMMARY_FILE = "summary.json"


def batch_images(batch: Any) -> int:
    """Images in a batch: the length of its ``image`` entry (a tensor or a list of images)."""
    if isinstance(batch, dict) and "image" in batch:
        return len(batch["image"])
    if isinstance(batch, (list, tuple)) and batch:
        return len(batch[0])
    return 0


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """The peak memory in MiB and what it measures."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS (ru_maxrss)"


class RunSummary(L.Callback):
    """Prints and writes ``summary.json`` (see the module's docstring) when a fit ends, also when it is stopped
    early or interrupted; only for runs with a logger (a run folder), and never in ``fast_dev_run``. One instance
    times one fit, from its construction (a task makes a new one for every fit)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, Any]] = []
        self.images = 0
        # The clock starts here (see the module's docstring): on_fit_start comes after the DataModule's, the model's
        # and the optimizer's setup, and a fit failing in them would otherwise have no start at all.
        self.start = time.perf_counter()
        self.val_time = 0.0
        self._val_start: float | None = None
        self._train_start: float | None = None  # the first training batch; None: training never started
        self._val_before_train = 0.0  # validation seconds before it (the sanity check), not training time

    @staticmethod
    def _active(trainer: L.Trainer) -> bool:
        return trainer.logger is not None and not trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning

    @classmethod
    def printed(cls, trainer: L.Trainer) -> bool:
        """Whether a fit on ``trainer`` prints a run summary at its end (a ``RunSummary`` callback, a run folder, not
        ``fast_dev_run``): that summary names the best and last checkpoints."""
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning, undeclared
        return cls._active(trainer) and any(isinstance(cb, cls) for cb in callbacks)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history, self.images = [], 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start, self._val_before_train = time.perf_counter(), self.val_time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += batch_images(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            self.val_time += time.perf_counter() - self._val_start
            self._val_start = None
        if trainer.sanity_checking:
            return
        monitor = getattr(pl_module, "monitor", "val/loss")
        value = trainer.callback_metrics.get(monitor)
        if value is not None:
            self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "value": float(value)})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finish(trainer, pl_module, "finished")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == "fit":
            self.finish(trainer, pl_module, f"stopped by {type(exception).__name__}", collective=False)

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, images: int) -> dict[str, Any]:
        """The summary as a dict (what ``summary.json`` holds)."""
        now = time.perf_counter()
        wall = now - self.start
        # A validation the fit failed in counts up to now.
        val_time = self.val_time + (now - self._val_start if self._val_start is not None else 0.0)
        train_time = 0.0
        if self._train_start is not None:
            train_time = now - self._train_start - (val_time - self._val_before_train)
        monitor = getattr(pl_module, "monitor", "val/loss")
        mode = getattr(pl_module, "monitor_mode", "min")
        ckpt = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
        best = None
        if ckpt is not None and ckpt.best_model_score is not None and ckpt.monitor:
            monitor, mode, best = ckpt.monitor, ckpt.mode, float(ckpt.best_model_score)
        elif self.history:
            best = (max if mode == "max" else min)(h["value"] for h in self.history)
        at = next((h for h in self.history if best is not None and math.isclose(h["value"], best, rel_tol=1e-6)), {})
        memory, measured = peak_memory_mib(pl_module.device)
        return {
            "status": status,
            "monitor": monitor,
            "mode": mode,
            "best": best,
            "best_epoch": at.get("epoch"),
            "best_step": at.get("step"),
            "validations": self.history,
            "epochs": trainer.fit_loop.epoch_progress.current.completed,
            "steps": trainer.global_step,
            "wall_time_s": round(wall, 2),
            "validation_time_s": round(val_time, 2),
            "train_images": images,
            "images_per_s": round(images / train_time, 2) if images and train_time > 0 else 0.0,
            "peak_memory_mib": round(memory, 1),
            "peak_memory": measured,
            "devices": trainer.world_size,
            "best_checkpoint": (ckpt.best_model_path or None) if ckpt else None,
            "last_checkpoint": (ckpt.last_model_path or None) if ckpt else None,
            "checkpoint_dir": ckpt.dirpath if ckpt else None,
            "run_folder": run_folder(trainer),
        }

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, collective: bool = True) -> None:
        """Write and print the summary (first process; the image count is summed over processes)."""
        if not self._active(trainer):
            return
        images = self.images
        if collective and trainer.world_size > 1:
            count = torch.tensor(float(images), device=pl_module.device)
            images = int(trainer.strategy.reduce(count, reduce_op="sum"))
        if not trainer.is_global_zero:
            return
        summary = self.summary(trainer, pl_module, status, images)
        folder = Path(run_folder(trainer))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(format_summary(summary, path), flush=True)


def run_folder(trainer: L.Trainer) -> str:
    """The run folder, as ``trainer.log_dir`` gives it but without its broadcast: ``log_dir`` is a collective call,
    which one process alone (the summary is written by the first) would wait on forever under DDP."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        return str(getattr(logger, "log_dir", None) or logger.save_dir or trainer.default_root_dir)
    return str(trainer.default_root_dir)


def format_summary(summary: dict[str, Any], path: Path) -> str:
    """The lines ``fit`` prints."""
    best = summary["best"]
    best_text = "no validation" if best is None else f"{summary['monitor']} = {best:.4f}"
    if summary["best_epoch"] is not None:
        best_text += f" at epoch {summary['best_epoch']} (step {summary['best_step']})"
    lines = [
        f"[vitdense] run summary ({summary['status']}): best {best_text}",
        f"[vitdense]   {summary['epochs']} epochs, {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
        f"({summary['validation_time_s']:.1f} s validating); {summary['images_per_s']:.1f} training images/s; "
        f"peak memory {summary['peak_memory_mib']:.0f} MiB ({summary['peak_memory']})",
    ]
    if summary["best_checkpoint"]:
        lines.append(f"[vitdense]   best checkpoint: {summary['best_checkpoint']}")
    if summary["last_checkpoint"]:
        lines.append(f"[vitdense]   last checkpoint: {summary['last_checkpoint']}")
    if summary["checkpoint_dir"]:
        lines.append(f"[vitdense]   checkpoints in {summary['checkpoint_dir']}")
    lines.append(f"[vitdense]   wrote {path}")
    return "\n".join(lines)
