"""vitdense's own subcommands beside LightningCLI's: ``estimate`` (costs of a config before training), ``evaluate``
(per-class and per-image scores of a checkpoint) and ``export`` (safetensors or ONNX)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from vitdense.cli import VitdenseCLI, main
from vitdense.data import BaseDataModule
from vitdense.tasks import BaseTask


class EstimateCLI(VitdenseCLI):
    """The CLI of ``estimate``: costs depend on the architecture alone, so no weights are loaded (none need be
    downloaded or on disk), whatever the config's ``pretrained`` says."""

    def before_instantiate_classes(self) -> None:
        init_args = self._get(self.config, "model").init_args
        backbone = init_args.backbone
        init_args.backbone = {
            **({"name": backbone} if isinstance(backbone, str) else dict(backbone)),
            "pretrained": False,
        }
        init_args.pretrained = None


def estimate_main(args: list[str]) -> str:
    """``vitdense estimate --config X [--batch B] [--size H [W]]``: the cost table of a configuration, printed and
    returned, before any training (see ``vitdense.estimate``)."""
    from vitdense.estimate import estimate, input_size

    parser = argparse.ArgumentParser(
        prog="vitdense estimate",
        description="Tokens, attention and other FLOPs, parameters and activation memory of a configuration, per "
        "stage, at its training input size, before any training. Every other argument is a `fit` argument "
        "(--config, --model.*, --data.*).",
    )
    parser.add_argument("--batch", type=int, help="batch size for the memory figures (default: the data's)")
    parser.add_argument("--size", type=int, nargs="+", metavar="PX", help="input H [W] (default: the crop size)")
    own, rest = parser.parse_known_args(args)
    cli = EstimateCLI(
        BaseTask, BaseDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, run=False, args=rest,
    )  # fmt: skip
    task, datamodule = cli.model, cli.datamodule
    size = input_size(datamodule, task, own.size)
    batch = own.batch or getattr(datamodule, "batch_size", 1)
    table = estimate(task, size, batch).table()
    print(table, flush=True)
    return table


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


def evaluate_main(args: list[str]) -> str:
    """``vitdense evaluate --config X [--ckpt_path Y] [--split val|test] [--output DIR]``: the metrics, the per-class
    table and the files written (see ``vitdense.evaluation``)."""
    from vitdense.evaluation import evaluate

    parser = argparse.ArgumentParser(
        prog="vitdense evaluate",
        description="Score a checkpoint on the val or test split of its config, per class and per image, and write "
        "metrics.json, per_class.csv and per_image.csv (by default into <run folder>/evaluation-<split>, a new "
        "folder). Every other argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--config", required=True, help="the config the checkpoint was trained with")
    parser.add_argument("--ckpt_path", help="checkpoint to score (default: the model as the config builds it)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--output", type=Path, help="folder for the files (new or empty)")
    own, rest = parser.parse_known_args(args)
    output = own.output
    if output is None and own.ckpt_path:
        output = free_folder(run_folder(own.ckpt_path) / f"evaluation-{own.split}")
    report = evaluate(own.config, own.ckpt_path, own.split, rest, output)
    text = report.table()
    worst = ", ".join(f"{Path(r['path']).name} ({r['score']:.3f})" for r in report.worst(5))
    text += f"\nworst images: {worst}"
    if output is not None:
        text += f"\nwrote metrics.json, per_class.csv and per_image.csv to {output}"
    print(text, flush=True)
    return text


def export_main(args: list[str]) -> str:
    """``vitdense export --config X --ckpt_path Y --format safetensors|onnx [--output F]``: the trained
    model as one file (see ``vitdense.export``); prints and returns its path."""
    from vitdense.export import export_onnx, export_safetensors

    parser = argparse.ArgumentParser(
        prog="vitdense export",
        description="Write a trained model as safetensors (weights + config; `vitdense.load(path)` rebuilds it) or "
        "ONNX (segmentation and classification; dynamic batch, height and width). Every other "
        "argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--config", required=True, help="the config the checkpoint was trained with")
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors")
    parser.add_argument("--output", type=Path, help="file to write (default: <run folder>/<config name>.<format>)")
    own, rest = parser.parse_known_args(args)
    cli = main(["--config", own.config, *rest, "--trainer.logger", "false"], run=False)
    task = cli.model
    checkpoint = torch.load(own.ckpt_path, map_location="cpu", weights_only=False)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])
    output = own.output or run_folder(own.ckpt_path) / f"{Path(own.config).stem}.{own.format}"
    path = export_onnx(task, output) if own.format == "onnx" else export_safetensors(task, output)
    text = f"wrote {path}"
    print(text, flush=True)
    return text


COMMANDS: dict[str, Callable[[list[str]], str]] = {
    "estimate": estimate_main,
    "evaluate": evaluate_main,
    "export": export_main,
}
