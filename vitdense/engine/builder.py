"""One way to build a run from a config: the Trainer, task and DataModule that ``fit`` would build (the same
LightningCLI, links and defaults), for the subcommands below the command line (evaluate, export, estimate, tune,
sweep, ...) and for ``vitdense.cli.entry.main``; and the run folders that subcommands write into.

Layering: ``cli`` (the dispatcher) -> ``commands`` (the table of vitdense's own subcommands) -> one module per
subcommand -> ``runs`` -> ``lightning_cli``. Nothing below ``cli`` imports it (tests/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import Trainer

# Importing the packages registers every task and DataModule, so short class_path names resolve.
from vitdense.data import BaseDataModule
from vitdense.engine.lightning_cli import NoWeightsCLI, VitdenseCLI, end_processes_at_exit
from vitdense.tasks import BaseTask


@dataclass
class Run:
    """What a config builds (names as on LightningCLI, so code written for a CLI object takes it too)."""

    trainer: Trainer
    model: BaseTask
    datamodule: BaseDataModule


def lightning_cli(args: Sequence[str] | None, run: bool = True, weights: bool = True) -> VitdenseCLI:
    """The ``VitdenseCLI`` of ``args`` (``None``: the command line), run or only built.

    Args:
        args: LightningCLI arguments (a subcommand first when ``run``).
        run: run the subcommand; ``False`` only parses the config and builds the model, data and trainer.
        weights: load the backbone's pretrained weights; ``False`` builds the architecture alone.
    """
    cli_class = VitdenseCLI if weights else NoWeightsCLI
    return cli_class(
        BaseTask,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": False},
        run=run,
        args=None if args is None else list(args),
    )


def build(
    config: str | Path | None, args: Sequence[str] = (), weights: bool = True, ckpt_path: str | Path | None = None
) -> Run:
    """The Trainer, task and DataModule of ``config`` with ``args`` (``--model.*``, ``--data.*``, ``--trainer.*``
    overrides, or more ``--config`` files), built as ``fit`` builds them, nothing run.

    Args:
        config: a YAML config (``None``: ``args`` hold every setting); a run folder's ``config.yaml`` too.
        args: further LightningCLI arguments.
        weights: load the backbone's pretrained weights; ``False`` builds the architecture alone (costs, memory).
        ckpt_path: build the task with this checkpoint's hyperparameters, as ``test --ckpt_path`` does (the
            config's ``inference`` and ``overlays`` win); its weights are not loaded (``vitdense.engine.restore`` does).
    """
    argv = (["--config", str(config)] if config is not None else []) + list(args)
    argv += ["--ckpt_path", str(ckpt_path)] if ckpt_path is not None else []
    cli = lightning_cli(argv, run=False, weights=weights)
    return Run(trainer=cli.trainer, model=cli.model, datamodule=cli.datamodule)


def run_lightning(args: Sequence[str] | None) -> VitdenseCLI:
    """Run a LightningCLI subcommand (``["fit", "--config", ...]``; ``None``: the command line) to its end, as
    ``python -m vitdense fit ...`` does; a multi-process run's processes end in order at exit."""
    cli = lightning_cli(args, run=True)
    end_processes_at_exit(cli.trainer)
    return cli


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint (``runs/<name>/version_N`` for ``.../checkpoints/x.ckpt``)."""
    ckpt = Path(checkpoint)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist yet."""
    n, folder = 1, base
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder
