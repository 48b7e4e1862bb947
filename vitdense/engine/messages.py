"""What the command line prints besides results: Lightning's lines a user cannot act on left out, and a config that
cannot be built reported as one message (the traceback only with ``VITDENSE_DEBUG=1``)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, is_typeddict

from lightning.pytorch.cli import LightningArgumentParser

DEBUG_VARIABLE = "VITDENSE_DEBUG"

# Lightning's lines that say nothing a vitdense user can act on: adverts for its cloud products, and the train
# loader it loads because vitdense's schedule asks how many steps a run has.
NOISE = ("litlogger", "litmodels", "Loading `train_dataloader` to estimate number of stepping batches")
# Warnings about Lightning's own code or calls vitdense makes, not about the user's config.
IGNORED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's _pytree on a newer torch
    r"LightningCLI's args parameter is intended to run from within Python",  # vitdense's own subcommands
    # On several processes, for each value a task logs per epoch: vitdense reduces its sums over the processes itself
    # (BaseTask._log_epoch_loss / _log_epoch_metrics), so Lightning's sync_dist would be wrong, not missing.
    r"It is recommended to use `self.log\(",
)
# With validate/test/predict --ckpt_path: the callbacks' saved state matters only to resume a fit.
CKPT_CALLBACK_WARNINGS = (
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    r"The dirpath has changed from .* won't be reloaded",
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class DropNoise(logging.Filter):
    """Drops Lightning's log lines listed in ``NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in NOISE)


def drop_noise() -> None:
    """Install the filters (once per process: ``engine.lightning_cli calls it; a DDP process imports it again)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNoise) for f in logger.filters):
            logger.addFilter(DropNoise())
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines off (warnings stay): for building a model, data and trainer that will not run (the
    seed, "GPU available", "Using bfloat16 Automatic Mixed Precision" before `vitdense estimate`'s table)."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def debug() -> bool:
    """Whether ``VITDENSE_DEBUG`` asks for tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "").lower() not in ("", "0", "false", "no")


class ConfigError(ValueError):
    """A config the CLI could not build into a model, data and trainer; the message says what to change."""


# What Lightning's ckpt_path takes besides a file (the fit's own checkpoints, a cluster's, a model registry's) or a URL.
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


def check_ckpt_path(ckpt_path: str | os.PathLike | None) -> None:
    """A ``--ckpt_path`` that is not a file is a ConfigError naming it: Lightning would find it out only when the run
    starts, after building everything, in a 50-line traceback."""
    text = str(ckpt_path or "")
    if not text or "://" in text or text.split(":")[0] in SPECIAL_CKPT_PATHS or os.path.isfile(text):
        return
    why = "is a folder, not a checkpoint file" if os.path.isdir(text) else "does not exist"
    raise ConfigError(
        f"--ckpt_path '{text}' {why}. Give a checkpoint file that `fit` wrote (it prints their paths at its end), "
        "e.g. runs/<name>/version_0/checkpoints/last.ckpt."
    )


def checkpoint_file(ckpt_path: str | os.PathLike) -> Path:
    """``ckpt_path`` as a checkpoint file to read now (``check_ckpt_path``'s checks, and not ``last``, ``best`` or a
    URL, which only a subcommand's Trainer resolves); a ConfigError naming it otherwise."""
    check_ckpt_path(ckpt_path)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"--ckpt_path '{ckpt_path}': give a checkpoint file that `fit` wrote.")
    return Path(ckpt_path)


def root_message(error: BaseException) -> str:
    """The message of the exception that started ``error``'s chain: what vitdense (or timm, torch) said, not the
    jsonargparse error that wraps it ("Does not validate against any of the Union subtypes ...")."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


VITDENSE = Path(__file__).parent.parent
# The code that reads the user's files: vitdense/data and its subpackages, and the scene reader/writer.
DATA_CODE = (VITDENSE / "data", VITDENSE / "inference" / "scenes.py")
_WORKER_TRACEBACK = "Original Traceback (most recent call last):\n"
_FRAME = re.compile(r'^  File "(.+?)", line \d+')


def data_message(error: BaseException) -> str | None:
    """The message of ``error`` when it is a problem in the user's data or files, else ``None``.

    A problem is a ValueError or OSError raised by vitdense's data code (``DATA_CODE``: a ``data.root`` that does not
    exist, a mask of the wrong size; its message names the file or key and what to do, like a ConfigError's), or an
    OSError that a library raised on a file vitdense's data code opened (Pillow's unreadable image, rasterio's). A
    ValueError raised inside a library is left to its traceback: it is more likely vitdense's bug than the user's data.
    An error raised in a DataLoader worker process reaches here as torch's "Caught ... in DataLoader worker process"
    with the worker's traceback as text: it is judged by that traceback, and its message is the worker's.
    """
    if not isinstance(error, (ValueError, OSError)) or error.__traceback__ is None:
        return None
    worker = _worker_error(str(error))
    if worker is not None:
        files, message = worker
    else:
        files, message = [], str(error)
        link: TracebackType | None = error.__traceback__
        while link is not None:
            files.append(link.tb_frame.f_code.co_filename)
            link = link.tb_next
    if not files:
        return None
    ours = [f for f in files if Path(f).is_relative_to(VITDENSE)]
    if _in_data_code(files[-1]) or (isinstance(error, OSError) and ours and _in_data_code(ours[-1])):
        return message or type(error).__name__
    return None


def _in_data_code(filename: str) -> bool:
    path = Path(filename)
    return any(path == code or path.is_relative_to(code) for code in DATA_CODE)


def _worker_error(text: str) -> tuple[list[str], str] | None:
    """The files of the frames and the message of an error re-raised from a DataLoader worker (torch's
    ``ExceptionWrapper``), or ``None`` when ``text`` is not one."""
    head, found, traceback = text.partition(_WORKER_TRACEBACK)
    if not found or not head.startswith("Caught "):
        return None
    lines = traceback.splitlines()
    frames = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _FRAME.match(line))]
    if not frames:
        return None
    rest = lines[frames[-1][0] + 1 :]
    start = next((i for i, line in enumerate(rest) if not line.startswith("    ")), len(rest))  # past the code lines
    message = re.sub(r"^[\w.]+: ", "", "\n".join(rest[start:]).strip(), count=1)
    return [file for _, file in frames], message


def exit_with(message: str, hint: str) -> NoReturn:
    """Print ``hint`` and then ``message`` as the last line(s), on stderr, and exit with code 2 (as argparse does)."""
    sys.stdout.flush()
    sys.stderr.write(f"[vitdense] {hint}\nerror: {message}\n")
    sys.stderr.flush()
    sys.exit(2)


_NESTED_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*|Given value: .*"
    r"|Expected a <class 'NoneType'>)$"
)


def condense(message: str) -> str:
    """jsonargparse's nested error (a key inside a class inside a union) as ``key.path: problem`` lines, with the
    valid keys where a key is unknown; an unnested message as it is."""
    if 'Parser key "' not in message:
        return message
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing "Parser key" lines
    subtypes: list[tuple[int, str]] = []
    problems = []
    for line in message.splitlines():
        text = line.strip().removeprefix("- ")
        indent = len(line) - len(line.lstrip(" -"))
        path = [(i, key) for i, key in path if i < indent]
        subtypes = [(i, names) for i, names in subtypes if i < indent]
        if key := re.fullmatch(r'Parser key "(.+)":', text):
            path.append((indent, key.group(1)))
        elif re.fullmatch(r"Problem with given class_path '(.+)':", text):
            path.append((indent, "init_args"))
        elif text.startswith("Subtypes: "):
            subtypes.append((indent - 1, text))
        elif text and not _NESTED_NOISE.match(text):
            where = ".".join(key for _, key in path)
            problem = f"{where}: {text}" if where else text
            unknown = re.fullmatch(r"Unexpected keys: (.+)", text)
            if unknown and subtypes:
                valid = _typeddict_keys(subtypes[-1][1])
                if valid:
                    problem = f"{where}: unknown key(s) {unknown.group(1)}; valid keys are {', '.join(valid)}."
            problems.append(problem)
    return "\n".join(problems) or message


def _typeddict_keys(subtypes_line: str) -> list[str]:
    """The keys of the TypedDict named in jsonargparse's "Subtypes: [<class 'a.b.C'>, ...]" line, if one is."""
    for module_name, name in re.findall(r"<class '([\w.]+)\.(\w+)'>", subtypes_line):
        with contextlib.suppress(ImportError, AttributeError):
            cls = getattr(importlib.import_module(module_name), name)
            if is_typeddict(cls):
                return sorted(cls.__annotations__)
    return []


# A negative number as a value (``--model.init_args.optimizer.lr -3e-4``): argparse's own pattern knows no exponent,
# so it took "-3e-4" for an option and said "expected one argument".
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class VitdenseArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors end the output as one readable message, without the 50-line usage, and
    which reads negative numbers in any notation as values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if debug() or not self.exit_on_error:
            super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        exit_with(condense(message), f"`{prog} --help` lists the options; {DEBUG_VARIABLE}=1 shows the details")
