"""vitdense's own subcommands beside LightningCLI's, as the table ``COMMANDS`` that ``cli.entry.main`` dispatches
from: ``data`` (a look at the data before training), ``estimate`` (costs of a config before training), ``evaluate``
(per-class and per-image scores of a checkpoint), ``export`` (safetensors or ONNX), ``stream`` (LitData chunks), and
``scene``, ``serve``, ``sweep``, ``tune``, whose arguments their own modules parse. Each parses its arguments and calls
its module, which builds what it needs with ``engine.builder``; only ``cli.entry`` imports this module."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vitdense.data import BaseDataModule
from vitdense.engine.builder import build, free_folder, run_folder
from vitdense.engine.messages import ConfigError, condense, data_message
from vitdense.tasks import ClassificationTask, SegmentationTask


def estimate_main(args: list[str]) -> str:
    """``vitdense estimate --config X [--batch B] [--size H [W]]``: the cost table of a configuration, printed and
    returned, before any training (see ``vitdense.cost.estimate``)."""
    from vitdense.cost.estimate import estimate, input_size

    parser = argparse.ArgumentParser(
        prog="vitdense estimate",
        description="Tokens, attention and other FLOPs, parameters and activation memory of a configuration, per "
        "stage, at its training input size, before any training. Every other argument is a `fit` argument "
        "(--config, --model.*, --data.*).",
    )
    parser.add_argument("--batch", type=int, help="batch size for the memory figures (default: the data's)")
    parser.add_argument("--size", type=int, nargs="+", metavar="PX", help="input H [W] (default: the crop size)")
    parser.add_argument("--devices", type=int, help="per-device training memory over this many devices")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp", help="replicated or sharded (FSDP2)")
    parser.add_argument("--activation_checkpointing", action="store_true", help="keep only each block's input")
    parser.add_argument("--activation_bytes", type=int, default=4, choices=(2, 4), help="2 for bf16/fp16 training")
    parser.add_argument("--gpu_gib", type=float, help="say whether the per-device memory fits a GPU of this size")
    own, rest = parser.parse_known_args(args)
    built = build(None, rest, weights=False)  # costs depend on the architecture alone: no weights are loaded
    task, datamodule = built.model, built.datamodule
    size = input_size(datamodule, task, own.size)
    batch = own.batch or getattr(datamodule, "batch_size", 1)
    result = estimate(task, size, batch)
    table = result.table()
    if own.devices or own.gpu_gib or own.activation_checkpointing or own.strategy != "ddp":
        table += "\n" + result.device_table(own.devices or 1, own.strategy, own.activation_checkpointing,
                                            own.activation_bytes, own.gpu_gib)  # fmt: skip
    print(table, flush=True)
    return table


def evaluate_main(args: list[str]) -> str:
    """``vitdense evaluate --config X [--ckpt_path Y] [--split val|test] [--output DIR]``: the metrics, the per-class
    table and the files written (see ``vitdense.evaluation.report``)."""
    from vitdense.evaluation.report import evaluate

    parser = argparse.ArgumentParser(
        prog="vitdense evaluate",
        description="Score a checkpoint on the val or test split of its config, per class and per image, and write "
        "metrics.json, per_class.csv and per_image.csv (by default into <run folder>/evaluation-<split>, a new "
        "folder). Every other argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--config", required=True, help="the config the checkpoint was trained with (or the run "
                        "folder's config.yaml)")  # fmt: skip
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
    model as one file (see ``vitdense.deploy.export``); prints and returns its path."""
    from vitdense.deploy.export import export_onnx, export_safetensors
    from vitdense.engine.restore import restore

    parser = argparse.ArgumentParser(
        prog="vitdense export",
        description="Write a trained model as safetensors (weights + config; `vitdense.load(path)` rebuilds it) or "
        "ONNX (segmentation and classification; dynamic batch, height and width). Every other "
        "argument is a `fit` argument (--model.*, --data.*).",
    )
    parser.add_argument("--config", required=True, help="the config the checkpoint was trained with (or the run "
                        "folder's config.yaml)")  # fmt: skip
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors")
    parser.add_argument("--output", type=Path, help="file to write (default: <run folder>/<config name>.<format>)")
    parser.add_argument("--quantize", choices=("int8",), help="also write an int8 copy (ONNX), static calibration")
    parser.add_argument("--calibration", type=int, default=32, help="val images that calibrate the int8 ranges")
    own, rest = parser.parse_known_args(args)
    if own.quantize and own.format != "onnx":
        parser.error("--quantize int8 needs --format onnx")
    args = [*rest, "--trainer.logger", "false"]
    # The task's kind decides --quantize before anything is read or written (the architecture alone, no weights).
    kind = type(build(own.config, args, weights=False).model) if own.quantize else None
    if kind is not None and not issubclass(kind, (SegmentationTask, ClassificationTask)):
        raise ValueError(
            f"--quantize int8 covers segmentation and classification; {kind.__name__} exports fp32 ONNX only "
            "(drop --quantize). Nothing was written."
        )
    # The task as the fit left it: weights and what the fit decided (band statistics, class weights, ...).
    built = restore(own.config, own.ckpt_path, args)
    task = built.model
    output = own.output or run_folder(own.ckpt_path) / f"{Path(own.config).stem}.{own.format}"
    path = export_onnx(task, output) if own.format == "onnx" else export_safetensors(task, output)
    text = f"wrote {path}"
    if own.quantize:
        text += "\n" + _quantize(path, built.datamodule, own.calibration, getattr(task, "ignore_index", 255))
    print(text, flush=True)
    return text


def _labelled_samples(datamodule: BaseDataModule, split: Literal["val", "test"]) -> list[tuple[np.ndarray, object]]:
    """(H, W, bands) images as the model takes them and their masks (or classes), from a split's items."""
    datamodule.setup("validate" if split == "val" else "test")
    samples = []
    for item in datamodule.dataset(split):  # type: ignore[attr-defined]  # map-style: iterates by __getitem__
        image = item["image"].numpy().transpose(1, 2, 0)
        samples.append((image, item["mask"].numpy() if "mask" in item else int(item["label"])))
    return samples


def _quantize(path: Path, datamodule: BaseDataModule, calibration: int, ignore_index: int) -> str:
    """int8 copy of the ONNX file ``path`` calibrated on the first val images, scored against fp32 on val."""
    from vitdense.deploy.onnx_runner import compare_int8, quantize_int8

    samples = _labelled_samples(datamodule, "val")
    int8 = quantize_int8(path, path.with_name(f"{path.stem}.int8.onnx"), [image for image, _ in samples[:calibration]])
    report = compare_int8(path, int8, samples, ignore_index)
    (int8.with_suffix(".json")).write_text(json.dumps(report, indent=2))
    return (f"wrote {int8} (int8, calibrated on {min(calibration, len(samples))} val images): val {report['metric']} "
            f"{report['fp32']:.4f} -> {report['int8']:.4f} ({report['change']:+.4f}) over {report['images']} images, "
            f"CPU {report['fp32_s_per_image'] * 1000:.1f} -> {report['int8_s_per_image'] * 1000:.1f} ms per image "
            f"(x{report['speedup']:.2f}); report in {int8.with_suffix('.json')}")  # fmt: skip


def _datamodule(config: str, overrides: list[str]) -> BaseDataModule:
    """The DataModule of a config's ``data`` section (with ``--data.*`` overrides), without building a model."""
    import yaml
    from jsonargparse import ArgumentParser

    cfg = yaml.safe_load(Path(config).read_text()) or {}
    if "data" not in cfg:
        raise ValueError(f"'{config}' has no data section; give the config you train with.")
    parser = ArgumentParser(prog="vitdense data", exit_on_error=False)
    parser.add_subclass_arguments(BaseDataModule, "data")
    try:
        parsed = parser.parse_args(["--data", yaml.safe_dump(cfg["data"]), *overrides])
        return parser.instantiate_classes(parsed).data
    except ValueError as err:  # jsonargparse wraps what the DataModule raised in its union-type message
        cause: BaseException = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        if cause is not err and data_message(cause) is not None:
            raise cause from None  # the data's own error, with its traceback, for the command line to report
        raise ConfigError(condense(str(err))) from err


def schedule_text(config: str, report: Any, batch_size: int) -> str:
    """The run the config asks for, counted from the training split: optimizer steps on one device and the warmup's
    share of them (``vitdense.tasks.training.warmup_too_long`` says the same at fit)."""
    import yaml

    from vitdense.tasks.training import planned_steps, resolve_scheduler_config, warmup_too_long

    train = next((s for s in report.splits if s.name == "train" and s.error is None), None)
    if train is None:
        return ""
    cfg = yaml.safe_load(Path(config).read_text()) or {}
    model = (cfg.get("model") or {}).get("init_args", cfg.get("model") or {})
    steps, how = planned_steps(cfg.get("trainer") or {}, sum(train.sizes.values()), batch_size)
    given = model.get("scheduler")
    if isinstance(given, dict) and "class_path" in given:  # a LightningCLI scheduler replaces vitdense's schedule
        return f"\n\nschedule: {steps} optimizer steps on one device ({how}); lr schedule {given['class_path']}"
    scheduler = resolve_scheduler_config(given if isinstance(given, dict) else None)
    warmup = int(scheduler["warmup_steps"])
    line = f"schedule: {steps} optimizer steps on one device ({how}); warmup {warmup} steps "
    line += f"({100 * warmup / max(steps, 1):.0f}%)"
    warning = warmup_too_long(scheduler, steps)
    return "\n\n" + "\n".join([line, *([f"  - {warning}"] if warning else [])])


def data_main(args: list[str]) -> str:
    """``vitdense data --config X [--output DIR] [--per_split N] [--write OUT]``: the data report of a config (images,
    sizes, pixels and images per class per split, missing classes, every problem) and a contact sheet (see
    ``vitdense.data.report``); ``--write`` writes what vitdense will train on in standard form."""
    from vitdense.data.report import contact_sheet, reportable, require_readable, summarize
    from vitdense.data.write import check_new_folder, write_coco, write_masks
    from vitdense.tasks.segmentation import class_palette

    parser = argparse.ArgumentParser(
        prog="vitdense data",
        description="Read the DataModule of a config (no model is built) and report, per split: images, sizes, "
        "pixels and images per class, classes missing from a split and every problem found; then write "
        "report.txt and contact_sheet.png (images with their masks in class colours) into a new folder. Every "
        "other argument is a --data.* argument.",
    )
    parser.add_argument("--config", required=True, help="the config to train with (its data section is read)")
    parser.add_argument("--output", type=Path, help="new folder for the files (default: runs/data/<config name>)")
    parser.add_argument("--per_split", type=int, default=8, help="images per split on the contact sheet")
    parser.add_argument("--write", type=Path, metavar="OUT", help="new or empty folder to write the data into as "
                        "vitdense trains on it: segmentation as <split>/masks/<image stem>.png (class-id palette PNGs, "
                        "void 255) + classes.txt; detection and instance as COCO JSON, <split>.json")  # fmt: skip
    own, rest = parser.parse_known_args(args)
    if own.write is not None:
        check_new_folder(own.write)
    datamodule = _datamodule(own.config, rest)
    if not reportable(datamodule):
        if own.write is not None and hasattr(datamodule, "categories"):
            text = write_coco(datamodule, own.write)
            print(text, flush=True)
            return text
        raise ConfigError(
            f"vitdense data reports segmentation DataModules (folders, raster scenes), and --write also writes "
            f"detection and instance DataModules as COCO JSON; {type(datamodule).__name__} is neither."
        )
    output = free_folder(own.output or Path("runs") / "data" / Path(own.config).stem)
    report = summarize(datamodule)
    text = report.table() + schedule_text(own.config, report, datamodule.batch_size)
    table = getattr(datamodule, "table", None)  # its source states a convention that sets ids (labelme's labels.txt)
    source = table.source if table else "data.num_classes / class_names"
    text = f"classes: {datamodule.num_classes} from {source}\n\n{text}"
    colors = getattr(datamodule, "class_colors", None) or [
        tuple(c) for c in np.reshape(class_palette(256), (256, 3)).tolist()
    ]
    output.mkdir(parents=True)
    (output / "report.txt").write_text(text + "\n")
    print(text, flush=True)  # first: the problem list is what the user needs to see, whatever fails after it
    sheet = contact_sheet(report, datamodule, colors, output / "contact_sheet.png", own.per_split)
    wrote = f"wrote {output / 'report.txt'}" + (f" and {sheet}" if sheet else " (no contact sheet: nothing to show)")
    print(wrote, flush=True)
    text += "\n" + wrote
    require_readable(report, output / "report.txt")
    if own.write is not None:
        written = write_masks(report, datamodule, own.write, colors)
        print(written, flush=True)
        text += "\n" + written
    return text


def stream_main(args: list[str]) -> str:
    """``vitdense stream --config X --output DIR``: a config's segmentation data as LitData chunks for
    ``StreamingSegmentationDataModule`` (see ``vitdense.data.datamodules.streaming``)."""
    from vitdense.data.datamodules.streaming import write_stream

    parser = argparse.ArgumentParser(
        prog="vitdense stream",
        description="Write the train/val/test splits of a config's segmentation DataModule (any layout or label "
        "format the DataModule reads, multi-band too) as LitData chunks into a new folder; upload it to an object "
        "store and train with StreamingSegmentationDataModule. Every other argument is a --data.* override.",
    )
    parser.add_argument("--config", required=True, help="the config whose data section to convert")
    parser.add_argument("--output", type=Path, required=True, help="new folder for the chunks")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=("train", "val", "test"))
    parser.add_argument("--chunk_bytes", default="64MB", help="size of one chunk file")
    own, rest = parser.parse_known_args(args)
    counts = write_stream(_datamodule(own.config, rest), own.output, tuple(own.splits), own.chunk_bytes)
    text = f"wrote {', '.join(f'{k} {v}' for k, v in counts.items())} samples to {own.output}"
    print(f"[vitdense] {text}", flush=True)
    return text


def scene_main(args: list[str]) -> str:
    """``vitdense scene``: rasters of any size into georeferenced class maps (``inference.scenes.scene_main``)."""
    from vitdense.inference.scenes import scene_main as run

    return run(args)


def tune_main(args: list[str]) -> str:
    """``vitdense tune``: the lr range test and the batch-size finder (``vitdense.tuning.tune.tune_main``)."""
    from vitdense.tuning.tune import tune_main as run

    return run(args)


def serve_main(args: list[str]) -> str:
    """``vitdense serve``: a trained model behind an HTTP endpoint (``vitdense.deploy.serve.serve_main``)."""
    from vitdense.deploy.serve import serve_main as run

    return run(args)


def sweep_main(args: list[str]) -> str:
    """``vitdense sweep``: an Optuna study over config keys (``vitdense.tuning.sweep.sweep_main``)."""
    from vitdense.tuning.sweep import sweep_main as run

    return run(args)


COMMANDS: dict[str, Callable[[list[str]], str]] = {
    "data": data_main,
    "estimate": estimate_main,
    "evaluate": evaluate_main,
    "export": export_main,
    "scene": scene_main,
    "serve": serve_main,
    "stream": stream_main,
    "sweep": sweep_main,
    "tune": tune_main,
}
