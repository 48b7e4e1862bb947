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
    """Install the filters (once per process: vitdense.lightning_cli calls it; a DDP process imports it again)."""
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


def root_message(error: BaseException) -> str:
    """The message of the exception that started ``error``'s chain: what vitdense (or timm, torch) said, not the
    jsonargparse error that wraps it ("Does not validate against any of the Union subtypes ...")."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__


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


class VitdenseArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors end the output as one readable message, without the 50-line usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if debug() or not self.exit_on_error:
            super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        exit_with(condense(message), f"`{prog} --help` lists the options; {DEBUG_VARIABLE}=1 shows the details")
