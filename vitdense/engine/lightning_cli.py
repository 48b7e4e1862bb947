"""The LightningCLI of vitdense (``VitdenseCLI``): every task and registered DataModule, run folders, loggers,
checkpoints and prediction writing, and the orderly end of multi-process runs. Built by ``vitdense.engine.builder``."""

from __future__ import annotations

import atexit
import contextlib
import copy
import inspect
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from vitdense.engine.messages import (
    CKPT_CALLBACK_WARNINGS,
    ConfigError,
    VitdenseArgumentParser,
    check_ckpt_path,
    checkpoint_file,
    drop_noise,
    quiet_lightning,
    root_message,
)
from vitdense.tasks.predictions import INDEX
from vitdense.tasks.summary import RunSummary

DEFAULT_ROOT = "runs"


drop_noise()


class PredictionWriter(BasePredictionWriter):
    """Writes each batch's predictions with the task's ``save_predictions`` into a new folder.

    With several processes, every process writes into rank 0's folder; files of one line per image are written as one
    part per process and merged by rank 0 in dataset order (``vitdense.tasks.predictions``), in the task's
    ``finish_predictions``.
    """

    def __init__(self, output_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.count = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        problem = None
        if trainer.is_global_zero and self.output_dir.exists() and any(self.output_dir.iterdir()):
            problem = f"Prediction folder '{self.output_dir}' is not empty; choose another one."
        # Each process named the folder by the time it started (a second process starts seconds after the first).
        self.output_dir, problem = trainer.strategy.broadcast((self.output_dir, problem))
        if problem:
            raise FileExistsError(problem)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for pred, index in zip(prediction, batch_indices or [None] * len(prediction), strict=True):
            pred[INDEX] = index  # the image's place in the dataset: the order merged files keep
        self.count += len(pl_module.save_predictions(prediction, self.output_dir))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Count every process's images; then rank 0 writes what needs all of them (merged parts, COCO results)."""
        self.count = int(trainer.strategy.reduce(torch.tensor(self.count, device=pl_module.device), reduce_op="sum"))
        finish = getattr(pl_module, "finish_predictions", None)
        trainer.strategy.barrier()
        if finish is not None and trainer.is_global_zero:
            # Trainer.datamodule, .callbacks and .fast_dev_run are set by Lightning's connectors, undeclared on Trainer.
            finish(self.output_dir, trainer.datamodule)  # type: ignore[attr-defined]


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for the best checkpoints of the monitored metric, and a ``last.ckpt`` that is
    always the newest state of the fit: written after every validation, every ``every_n_train_steps`` steps when set,
    at the end of the fit (max_epochs, max_steps mid-epoch, early stopping), and when a one-process fit is stopped
    with Ctrl-C between optimizer steps.

    vitdense writes ``last.ckpt`` itself: Lightning 2.6 writes it only at a step where a best checkpoint is written
    too, so it held the best epoch, not the end of the fit (and other versions have had other rules).

    Args:
        save_last: write ``last.ckpt``; every other argument is ``ModelCheckpoint``'s.
    """

    def __init__(self, save_last: bool = True, **kwargs: Any) -> None:
        super().__init__(save_last=False, **kwargs)  # Lightning writes the best checkpoints only
        self.write_last = bool(save_last)
        self.last_every_n_train_steps = kwargs.get("every_n_train_steps") or 0
        self.last_version_counter = kwargs.get("enable_version_counter", True)
        self._last_step_written: int | None = None
        self._in_optimizer_step = False  # between an optimizer step's start and its batch's end

    def _can_write(self, trainer: Trainer) -> bool:
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning, undeclared
        return self.write_last and trainer.state.fn == "fit" and not trainer.sanity_checking and not fast_dev_run

    def _last_path(self, trainer: Trainer) -> str:
        metrics = {**trainer.callback_metrics, "epoch": torch.tensor(trainer.current_epoch),
                   "step": torch.tensor(trainer.global_step)}  # fmt: skip
        path = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST)
        version = self.STARTING_VERSION
        # A last.ckpt of another fit in the same folder is kept, as Lightning keeps it (last-v1.ckpt, ...).
        while self.last_version_counter and path != self.last_model_path and self.file_exists(path, trainer):
            path = self.format_checkpoint_name(metrics, self.CHECKPOINT_NAME_LAST, ver=version)
            version += 1
        return path

    def write_last_checkpoint(self, trainer: Trainer) -> None:
        """Write the current state to ``last.ckpt`` (every process takes part, as in ``Trainer.save_checkpoint``)."""
        path = self._last_path(trainer)
        previous, self.last_model_path = self.last_model_path, path  # set first: it is part of the saved state
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_step_written = trainer.global_step
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        if previous and previous != path and Path(previous).parent == Path(path).parent:
            trainer.strategy.remove_checkpoint(previous)  # last.ckpt named by a metric: one file, as Lightning

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
                           ) -> None:  # fmt: skip
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._in_optimizer_step = False
        every, step = self.last_every_n_train_steps, trainer.global_step
        if every and step % every == 0 and self._last_step_written != step and self._can_write(trainer):
            self.write_last_checkpoint(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_step_written, self._in_optimizer_step = None, False  # a new fit (the callback may be reused)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        self._in_optimizer_step = True

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._can_write(trainer):  # also at a step written before: the best scores and callback states moved on
            self.write_last_checkpoint(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self._can_write(trainer) and self._last_step_written != trainer.global_step:
            self.write_last_checkpoint(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        # Ctrl-C: the state is whole unless it came during an optimizer step (parameters half updated) or inside an
        # accumulation of gradients (which are not saved); with several processes, saving (a collective) could hang.
        consistent = not self._in_optimizer_step and trainer.accumulate_grad_batches == 1
        if (isinstance(exception, KeyboardInterrupt) and consistent and trainer.world_size == 1
                and self._can_write(trainer) and self._last_step_written != trainer.global_step):  # fmt: skip
            self.write_last_checkpoint(trainer)


class VitdenseCLI(LightningCLI):
    """LightningCLI whose model is any ``BaseTask`` and whose data is any registered ``BaseDataModule``."""

    def __init__(self, *args: Any, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", VitdenseArgumentParser)
        # Only building (estimate, export, Python): Lightning's lines about seeding, devices and precision are noise.
        kwargs["run"] = run
        with contextlib.nullcontext() if run else quiet_lightning():
            super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The DataModule knows the classes; the task receives them so a user states them once.
        # Links whose source or target a given class lacks (e.g. ignore_index for classification) are skipped.
        for key in ("num_classes", "class_names", "ignore_index", "class_colors"):
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        # The size too: the backbone is built for the training crop (pos-embed / window tables resampled to it).
        parser.link_arguments("data.input_size", "model.init_args.img_size", apply_on="instantiate")
        # And the band count of multi-band data (data.bands); DataModules without bands have no in_chans.
        parser.link_arguments("data.in_chans", "model.init_args.in_chans", apply_on="instantiate")

    LINKED = ("num_classes", "class_names", "ignore_index", "img_size", "in_chans")
    # How a model is evaluated and what predict writes, not what it learned: with --ckpt_path, the value in the
    # config and command line wins over the checkpoint's (LightningCLI would restore every saved argument).
    EVAL_SETTINGS = ("inference", "overlays")

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
                     ) -> None:  # fmt: skip
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:  # only building (vitdense.engine.builder.build)
            # A run folder's config.yaml is a subcommand's config (fit writes `ckpt_path: null` and `weights_only`,
            # test also `verbose`): building takes it as it is. A ckpt_path builds the model with the checkpoint's
            # hyperparameters (_parse_ckpt_path).
            added: set[str | int] = set()
            for subcommand, skip in self.subcommands().items():
                added |= set(self.parser.add_method_arguments(Trainer, subcommand, skip={*skip, *added}))

    def _parse_ckpt_path(self) -> None:
        """Build the model with the checkpoint's hyperparameters (everything the fit decided: band statistics, class
        names and colours, ...), as LightningCLI does for a subcommand's ``--ckpt_path``, and when only building too;
        ``EVAL_SETTINGS`` keep the config's values."""
        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else self.config
        init_args = section.model.get("init_args") if section.get("model") else None
        given = {k: copy.deepcopy(init_args[k]) for k in self.EVAL_SETTINGS if init_args and k in init_args}
        if subcommand:
            check_ckpt_path(section.get("ckpt_path"))
            super()._parse_ckpt_path()
        elif section.get("ckpt_path"):
            self._restore_hyperparameters(section.ckpt_path)
        if not given:
            return
        section = self.config[subcommand] if subcommand else self.config
        restored = section.model.get("init_args")
        for key, value in given.items():
            if restored.get(key) != value:
                rank_zero_info(f"[vitdense] {subcommand or 'build'}: model.init_args.{key} from the config ({value}), "
                               f"not the checkpoint's ({restored.get(key)})")  # fmt: skip
            restored[key] = value

    def _restore_hyperparameters(self, ckpt_path: str) -> None:
        """LightningCLI's ``_parse_ckpt_path`` on the config of a parser without subcommands."""
        # Memory-mapped: only the hyperparameters are read, not every tensor of the checkpoint.
        checkpoint = torch.load(checkpoint_file(ckpt_path), weights_only=True, map_location="cpu", mmap=True)
        hparams = checkpoint.get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({"model": hparams}, self.config)

    def instantiate_classes(self) -> None:
        """Instantiate data, model and trainer; a model value the data replaces through a link is an error when
        the user set it to something else (jsonargparse would overwrite it silently)."""
        try:
            self._instantiate_and_check_links()
        except Exception as err:  # the message of what failed, not jsonargparse's wrapping of it
            raise ConfigError(root_message(err)) from err

    def _instantiate_and_check_links(self) -> None:
        model_cfg = self._get(self.config, "model")
        init_args = getattr(model_cfg, "init_args", None) or {}
        given: dict[str, Any] = {key: init_args.get(key) for key in self.LINKED if init_args.get(key) is not None}
        super().instantiate_classes()
        sources = {"img_size": "data.crop_size / data.image_size (the training crop)",
                   "in_chans": "the number of data.bands (3 for RGB images)"}  # fmt: skip
        for key, value in given.items():
            linked = self.model.hparams.get(key)
            if value == _signature_default(type(self.model), key):
                continue  # not set by the user (the config holds every default)
            if linked is None or list(np.atleast_1d(linked)) == list(np.atleast_1d(value)):
                continue
            source = sources.get(key, f"data.{key}")
            ckpt = self._get(self.config, "ckpt_path", default=None)
            if ckpt:  # LightningCLI put the checkpoint's hyperparameters into the model's config
                names = init_args.get("class_names")
                trained = f"{key}={value}" + (
                    f" ({', '.join(map(str, names))})" if key == "num_classes" and names else ""
                )
                raise ValueError(
                    f"The checkpoint '{ckpt}' was trained with {trained}, but the data gives {key}={linked} "
                    f"({source}). Make the data match the checkpoint, or start from its weights with "
                    "model.init_args.backbone.pretrained to train for the new setting."
                )
            raise ValueError(
                f"model.init_args.{key} is {value!r}, but the CLI takes it from the data: {source} gives "
                f"{linked!r}. Set it on the data only (remove model.init_args.{key})."
            )

    def _run_subcommand(self, subcommand: str) -> None:
        with warnings.catch_warnings():
            for pattern in CKPT_CALLBACK_WARNINGS if subcommand != "fit" else ():
                warnings.filterwarnings("ignore", message=pattern)
            super()._run_subcommand(subcommand)

    def _run_name(self) -> str:
        configs = self.config.get(str(self.subcommand), self.config).get("config") or []
        return Path(str(configs[0])).stem if configs else type(self.model).__name__.lower()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        root = trainer_cfg.get("default_root_dir") or DEFAULT_ROOT
        kwargs.setdefault("default_root_dir", root)
        if self.subcommand != "predict" and trainer_cfg.get("logger") in (None, True):
            # CSV first: it picks the next free version folder, which TensorBoard then shares.
            csv = CSVLogger(save_dir=root, name=self._run_name())
            kwargs["logger"] = [csv, TensorBoardLogger(save_dir=root, name=csv.name, version=csv.version)]
        callbacks = list(trainer_cfg.get("callbacks") or [])
        if self.subcommand == "fit" and trainer_cfg.get("enable_checkpointing", True) is not False:
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                callbacks.append(self._checkpoint_callback())
            if trainer_cfg.get("logger") is not False:
                callbacks.append(LearningRateMonitor(logging_interval="step"))
        if self.subcommand == "predict":
            stamp = time.strftime("%Y%m%d-%H%M%S")
            callbacks.append(PredictionWriter(Path(root) / "predictions" / f"{self._run_name()}-{stamp}"))
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def _checkpoint_callback(self) -> ModelCheckpoint:
        monitor, mode = self.model.monitor, self.model.monitor_mode
        short = monitor.split("/")[-1]
        return BestAndLastCheckpoint(
            monitor=monitor,
            mode=mode,
            save_last=True,
            filename=f"best-epoch{{epoch:03d}}-{short}{{{monitor}:.4f}}",
            auto_insert_metric_name=False,
        )

    def _say(self, message: str) -> None:
        if self.trainer.is_global_zero:
            print(f"[vitdense] {message}", flush=True)

    def before_fit(self) -> None:
        self._say(f"run folder: {self.trainer.log_dir}")

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        # The run summary, where printed, names both checkpoints already (and the best score).
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path and not RunSummary.printed(self.trainer):
            score = ckpt.best_model_score
            score_text = f" ({ckpt.monitor} = {score:.4f})" if score is not None else ""
            self._say(f"best checkpoint: {ckpt.best_model_path}{score_text}")
            if ckpt.last_model_path:
                self._say(f"last checkpoint: {ckpt.last_model_path}")
        self._say(f"run folder: {self.trainer.log_dir}")

    def before_test(self) -> None:
        self._say(f"run folder: {self.trainer.log_dir}")

    def after_predict(self) -> None:
        for cb in self.trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning, undeclared
            if isinstance(cb, PredictionWriter):
                self._say(f"wrote {cb.count} predictions to {cb.output_dir}")


def _signature_default(cls: type, name: str) -> Any:
    """Default of ``name`` in the ``__init__`` of ``cls`` or of the first base class that declares it."""
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters  # type: ignore[misc]  # klass is a class, not an instance
        if name in params:
            return params[name].default
    return None


def _end_processes(children: list[subprocess.Popen], timeout: float = 300.0) -> None:
    """Tear a multi-process run down in order: the launching process waits for the processes it started, then every
    process destroys its process group before the interpreter exits.

    Left to interpreter shutdown, a process whose peers had already gone could abort in gloo's teardown (exit code
    -6 on a busy machine), and a launcher leaving first takes the TCP store its children still talk to.
    """
    for proc in children:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(
                f"[vitdense] process {proc.pid} has not finished {timeout:.0f} s after this one; leaving it.",
                flush=True,
            )
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_ENDING_REGISTERED = False


def end_processes_at_exit(trainer: Trainer) -> None:
    """After the first multi-process run of this process, end the processes in order at exit (once)."""
    global _ENDING_REGISTERED
    if _ENDING_REGISTERED or not (dist.is_available() and dist.is_initialized()):
        return
    launcher = getattr(trainer.strategy, "launcher", None)
    atexit.register(_end_processes, list(getattr(launcher, "procs", None) or []))
    _ENDING_REGISTERED = True


class NoWeightsCLI(VitdenseCLI):
    """A ``VitdenseCLI`` that builds the architecture without loading weights (none need be downloaded or on disk),
    whatever the config's ``pretrained`` says: for what depends on the architecture alone (costs, memory)."""

    def before_instantiate_classes(self) -> None:
        init_args = self._get(self.config, "model").init_args
        backbone = init_args.backbone
        init_args.backbone = {
            **({"name": backbone} if isinstance(backbone, str) else dict(backbone)),
            "pretrained": False,
        }
        init_args.pretrained = None
