"""``vitdense tune``: the learning rate (an lr range test that keeps the recipe's ratios) and the batch size
(``--batch_size``, ``vitdense.tuning.batch_size``) of a config, before training.

The range test trains the config's model from its starting weights for up to ``steps`` optimizer steps while the base
lr grows exponentially from ``min_lr`` to ``max_lr``. Every parameter group's lr is its recipe ratio (``lr_scale``:
layer decay on the backbone, ``head_lr_mult`` on neck and head) times the tested base lr, so what is found is
``optimizer.lr`` of the recipe as it will train (Lightning's ``lr_find`` sets one lr for every group, which tests
another optimizer). The loss is smoothed (exponential moving average with bias correction, as fastai and Lightning
do); the test stops when the smoothed loss exceeds ``diverge`` x its minimum, or is not finite. The suggestion is
the lr at the smoothed minimum divided by 10 (Smith's rule: a step below where the loss stops falling); the steepest
descent is reported beside it. The schedule (warmup, decay) is off during the test.

A minimum at the edge of the range is no minimum: where the smoothed loss still falls at ``max_lr`` (the test reached
it without diverging and its lowest point is in the last steps) or rises from ``min_lr`` on (lowest in the first
steps), the loss never turned inside the range, and the lr there over 10 says nothing about the recipe. Then no lr is
suggested and ``tune.yaml`` is not written: the report says which edge and the command that widens the range by 100x
on that side (the test is not rerun by itself: a range test is a training run of its own).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

SUGGESTION_FILE = "tune.yaml"
EDGE = 0.05  # a smoothed minimum in the first or last 5% of the steps is at the edge of the range


class LRRangeTest(L.Callback):
    """Sets every group's lr to ``lr_scale x`` the tested base lr before each step, and records the losses.

    Args:
        min_lr: base lr of the first step.
        max_lr: base lr of the last step.
        steps: steps of the ramp (the test may stop earlier, on divergence).
        beta: smoothing of the loss (exponential moving average factor).
        diverge: stop when the smoothed loss exceeds this multiple of its minimum.
    """

    def __init__(self, min_lr: float, max_lr: float, steps: int, beta: float = 0.98, diverge: float = 4.0) -> None:
        super().__init__()
        if not 0 < min_lr < max_lr:
            raise ValueError(f"--min_lr {min_lr} and --max_lr {max_lr}: need 0 < min_lr < max_lr.")
        if steps < 2:
            raise ValueError(f"--steps {steps}: the range test needs at least 2 steps.")
        self.min_lr, self.max_lr, self.steps, self.beta, self.diverge = min_lr, max_lr, steps, beta, diverge
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.group_lrs: list[list[float]] = []  # what the optimizer held at each step, per group
        self.scales: list[float] = []
        self.names: list[str] = []
        self._avg = 0.0

    def lr_at(self, step: int) -> float:
        """The base lr of step ``step`` (0-based): exponential from ``min_lr`` to ``max_lr``."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.lr_scheduler_configs = []  # the schedule would overwrite the tested lrs
        optimizer = trainer.optimizers[0]
        base = optimizer.defaults["lr"]
        self.scales = [float(g.get("lr_scale", g["lr"] / base)) for g in optimizer.param_groups]
        self.names = [str(g.get("name", i)) for i, g in enumerate(optimizer.param_groups)]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        lr = self.lr_at(min(len(self.losses), self.steps - 1))
        for group, scale in zip(trainer.optimizers[0].param_groups, self.scales, strict=True):
            group["lr"] = scale * lr

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.group_lrs.append([float(g["lr"]) for g in optimizer.param_groups])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # Every process decides on the same (mean) loss, so all stop at the same step.
        loss = float(trainer.strategy.reduce(loss.detach().float(), reduce_op="mean"))
        step = len(self.losses)
        self.lrs.append(self.lr_at(min(step, self.steps - 1)))
        self.losses.append(loss)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (step + 1))
        self.smoothed.append(smooth)
        if not math.isfinite(smooth) or (step > 0 and smooth > self.diverge * min(self.smoothed)):
            trainer.should_stop = True
        if len(self.losses) >= self.steps:
            trainer.should_stop = True

    def minimum(self) -> int:
        """The step of the smoothed loss's (finite) minimum."""
        finite = [(s, i) for i, s in enumerate(self.smoothed) if math.isfinite(s)]
        if len(finite) < 2:
            raise RuntimeError("The range test recorded fewer than 2 finite losses; lower --min_lr or --max_lr.")
        return min(finite)[1]

    def diverged(self) -> bool:
        """Whether the test stopped before its last step (the smoothed loss blew up or was not finite)."""
        return len(self.losses) < self.steps

    def edge(self) -> Literal["min_lr", "max_lr"] | None:
        """The edge of the range the smoothed minimum sits at, if any: ``max_lr`` when the test ran to the end
        without diverging and the minimum is in its last ``EDGE`` fraction of steps (the loss still falls there),
        ``min_lr`` when the minimum is in the first ``EDGE`` fraction (the loss rises from the start)."""
        low, margin = self.minimum(), max(1, round(EDGE * self.steps))
        if low < margin:
            return "min_lr"
        if not self.diverged() and low >= len(self.smoothed) - margin:
            return "max_lr"
        return None

    def suggestion(self) -> float:
        """The lr at the smoothed loss's minimum, divided by 10 (whether or not it is at an edge: see ``edge``)."""
        return self.lrs[self.minimum()] / 10

    def steepest(self) -> float:
        """The lr where the smoothed loss falls fastest per decade of lr (before the minimum, after the first 10% of
        the steps)."""
        end = self.minimum()
        start = len(self.smoothed) // 10  # the first steps' bias-corrected average still moves by itself
        if end - start < 2:
            return self.lrs[end]
        slopes = {i: (self.smoothed[i + 1] - self.smoothed[i]) / math.log10(self.lrs[i + 1] / self.lrs[i])
                  for i in range(start, end)}  # fmt: skip
        return self.lrs[min(slopes, key=slopes.__getitem__)]


def plot_curve(test: LRRangeTest, suggested: float | None, path: Path) -> Path:
    """The loss (raw and smoothed) against the lr, log scale, with the suggestion (if any) marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(test.lrs, test.losses, color="0.75", lw=1, label="loss")
    ax.plot(test.lrs, test.smoothed, color="C0", lw=2, label="smoothed loss")
    if suggested is not None:
        ax.axvline(suggested, color="C3", ls="--", label=f"suggested lr {suggested:.2e}")
    ax.set_xscale("log")
    finite = [s for s in test.smoothed if math.isfinite(s)]
    ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 2 * finite[0]) * 1.05 + 1e-8)
    ax.set_xlabel("base lr (optimizer.lr; each group at its recipe ratio)")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def optimizer_key(task: Any) -> str:
    """The config key of the base lr: vitdense's AdamW dict, or a replaced optimizer's init_args."""
    return "model.init_args.optimizer.init_args.lr" if task.optimizer_fn is not None else "model.init_args.optimizer.lr"


def write_suggestion(task: Any, lr: float, output: Path) -> Path:
    """``tune.yaml``: the config's optimizer section with the suggested lr, to add after the config
    (``fit --config X --config tune.yaml``); the other optimizer settings (layer decay, head multiplier) kept."""
    if task.optimizer_fn is not None:
        optimizer: dict[str, Any] = {"init_args": {"lr": float(f"{lr:.3g}")}}
    else:
        optimizer = {k: list(v) if isinstance(v, tuple) else v for k, v in task.optimizer_cfg.items()}
        optimizer["lr"] = float(f"{lr:.3g}")
    path = output / SUGGESTION_FILE
    path.write_text(yaml.safe_dump({"model": {"init_args": {"optimizer": optimizer}}}, sort_keys=False))
    return path


def range_test_cli(config: str, rest: list[str], steps: int) -> Any:
    """The config's model, data and a Trainer set up for the range test: ``steps`` training steps, no validation,
    checkpoints, loggers or early stopping."""
    from vitdense.engine.builder import build

    args = [*rest, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.min_epochs", "null",
            "--trainer.min_steps", "null"]  # fmt: skip
    cli = build(config, args)
    # Trainer.callbacks is set by Lightning's connectors, undeclared on Trainer.
    callbacks = cli.trainer.callbacks  # type: ignore[attr-defined]
    cli.trainer.callbacks = [c for c in callbacks if not isinstance(c, (EarlyStopping, ModelCheckpoint))]  # type: ignore[attr-defined]
    return cli


def lr_range_test(cli: Any, test: LRRangeTest, output: Path) -> str:
    """Run the range test on the CLI's model and data; write the curve, the losses and, where the loss turned inside
    the range, ``tune.yaml`` into ``output``; return the report."""
    cli.trainer.callbacks.append(test)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    edge, steepest = test.edge(), test.steepest()
    suggested = None if edge else test.suggestion()
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "lr_range_test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, (lr, loss, smooth) in enumerate(zip(test.lrs, test.losses, test.smoothed, strict=True)):
            writer.writerow([i, f"{lr:.6g}", f"{loss:.6g}", f"{smooth:.6g}"])
    curve = plot_curve(test, suggested, output / "lr_curve.png")
    ratios = sorted(set(round(s, 6) for s in test.scales))
    stopped = "diverged" if test.diverged() else "reached --max_lr"
    lines = [
        f"lr range test: {len(test.losses)} steps from {test.min_lr:.1e} to {test.lrs[-1]:.2e} ({stopped}); "
        f"{len(test.scales)} parameter groups at their recipe ratios (lr_scale {ratios[0]:.3g} to {ratios[-1]:.3g})",
        f"smoothed loss: {test.smoothed[0]:.4f} at the start, min {min(test.smoothed):.4f} at lr "
        f"{test.lrs[test.minimum()]:.2e}; steepest descent at lr {steepest:.2e}",
    ]
    if edge is None:
        config = write_suggestion(cli.model, test.suggestion(), output)
        lines += [
            f"suggested: {optimizer_key(cli.model)}: {suggested:.3g}   (the lr at the minimum / 10)",
            f"wrote {curve}, {output / 'lr_range_test.csv'} and {config}",
            f"use it: vitdense fit --config <config> --config {config}",
        ]
    else:
        lines += [*edge_advice(test, edge), f"wrote {curve} and {output / 'lr_range_test.csv'}"]
        stale = output / SUGGESTION_FILE
        if stale.exists():  # an earlier test's answer, not this one's: fit must not take it for this test's
            stale.unlink()
            lines.append(f"removed {stale}, an earlier range test's suggestion")
    return "\n".join(lines)


def edge_advice(test: LRRangeTest, edge: str) -> list[str]:
    """The report's lines for a smoothed minimum at the edge of the range: what happened and the wider range to run."""
    if edge == "max_lr":
        what = f"the smoothed loss still falls at --max_lr {test.max_lr:.3g}: it never turned inside the range"
        wider = f"--max_lr {test.max_lr * 100:.3g}"
    else:
        what = f"the smoothed loss is lowest at --min_lr {test.min_lr:.3g} and rises from there: it never fell"
        wider = f"--min_lr {test.min_lr / 100:.3g}"
    return [
        f"no lr suggested and no {SUGGESTION_FILE} written: {what}, so the lr at its lowest point / 10 "
        f"({test.suggestion():.3g}) would be the edge of the range, not the recipe's lr",
        f"widen the range and run it again: vitdense tune --config <config> {wider} (and the same other arguments)",
    ]


def tune_main(args: list[str]) -> str:
    """``vitdense tune --config X [--lr] [--batch_size] [--output DIR] ...``: the lr range test (default) and/or the
    batch-size finder; prints and returns the report."""
    parser = argparse.ArgumentParser(
        prog="vitdense tune",
        description="Find optimizer.lr by an lr range test that keeps the recipe's per-group ratios (layer decay, "
        "head_lr_mult), and/or the largest batch that fits (--batch_size). Writes lr_curve.png, lr_range_test.csv "
        "and tune.yaml (or batch_size.json) into a new folder. Every other argument is a `fit` argument "
        "(--model.*, --data.*, --trainer.*).",
    )
    parser.add_argument("--config", required=True, help="the config to train with")
    parser.add_argument("--lr", action="store_true", help="run the lr range test (the default without --batch_size)")
    parser.add_argument("--batch_size", action="store_true", help="find the largest batch per device that fits")
    parser.add_argument("--min_lr", type=float, default=1e-7, help="base lr of the first step")
    parser.add_argument("--max_lr", type=float, default=1.0, help="base lr of the last step")
    parser.add_argument("--steps", type=int, default=100, help="steps of the lr ramp")
    parser.add_argument("--diverge", type=float, default=4.0, help="stop when the smoothed loss exceeds this x its min")
    parser.add_argument("--margin", type=float, default=0.1, help="batch size: fraction of memory left free")
    parser.add_argument("--output", type=Path, help="new folder for the files (default: <root>/tune/<config>)")
    own, rest = parser.parse_known_args(args)
    from vitdense.engine.builder import free_folder

    reports, output = [], own.output
    if own.batch_size:
        from vitdense.tuning.batch_size import find_batch_size

        cli = batch_size_cli(own.config, rest)
        output = output or free_folder(Path(cli.trainer.default_root_dir) / "tune" / Path(own.config).stem)
        reports.append(find_batch_size(cli, own.margin, output))
    if own.lr or not own.batch_size:
        test = LRRangeTest(own.min_lr, own.max_lr, own.steps, diverge=own.diverge)
        cli = range_test_cli(own.config, rest, own.steps)
        output = output or free_folder(Path(cli.trainer.default_root_dir) / "tune" / Path(own.config).stem)
        reports.append(lr_range_test(cli, test, output))
    text = "\n".join(reports)
    print(text, flush=True)
    return text


def batch_size_cli(config: str, rest: list[str]) -> Any:
    """The config's model (without pretrained weights: they do not change memory), data and Trainer."""
    from vitdense.engine.builder import build

    return build(config, [*rest, "--trainer.logger", "false"], weights=False)
