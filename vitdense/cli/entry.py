"""The command line: ``python -m vitdense`` and the ``vitdense`` console script. ``main`` dispatches to vitdense's own
subcommands (``cli.commands``) or to LightningCLI's fit, validate, test and predict (``engine.builder``). It is
the top of the package: no module of vitdense imports it.
"""

from __future__ import annotations

import sys

from vitdense.cli.commands import COMMANDS
from vitdense.engine.builder import lightning_cli, run_lightning

# Re-exported: ``from vitdense.cli.entry import VitdenseCLI, PredictionWriter, ...`` keeps working.
from vitdense.engine.lightning_cli import (  # noqa: F401
    DEFAULT_ROOT,
    NoWeightsCLI,
    PredictionWriter,
    VitdenseCLI,
    end_processes_at_exit,
)
from vitdense.engine.messages import DEBUG_VARIABLE, ConfigError, data_message, debug, exit_with


def main(args: list[str] | None = None, run: bool = True) -> VitdenseCLI | str:
    """Entry point of ``python -m vitdense`` and the ``vitdense`` console script.

    The names in ``vitdense.cli.commands.COMMANDS`` (data, estimate, evaluate, export, scene, serve, stream, sweep,
    tune) are vitdense's own subcommands; every other subcommand is LightningCLI's (fit, validate, test, predict).

    From the command line (``args`` None), a config that cannot be built (a weights file that is not there, a head
    key that does not exist, a num_classes that disagrees with the data) or data that cannot be read (a data.root
    that does not exist) ends the output as one message with exit code 2, in every subcommand (fit, validate, test,
    predict, data, scene, stream, ...; ``engine.messages.data_message`` says which errors are the data's);
    ``VITDENSE_DEBUG=1`` raises it with its traceback instead. Called with ``args``, it raises ConfigError (or the
    data's error).

    Args:
        args: command-line arguments (default ``sys.argv[1:]``).
        run: run the subcommand; ``False`` only parses the config and builds the model, data and trainer.
    """
    if args is not None or debug():
        return _main(args, run)
    try:
        return _main(args, run)
    except ConfigError as err:
        exit_with(str(err), f"the config could not be built; {DEBUG_VARIABLE}=1 shows the traceback")
    except (ValueError, OSError) as err:
        message = data_message(err)
        if message is None:
            raise
        listed = "" if sys.argv[1:2] == ["data"] else "`vitdense data --config ...` lists every problem, "
        exit_with(message, f"the data could not be read; {listed}{DEBUG_VARIABLE}=1 shows the traceback")


def commands_help() -> str:
    """One line per vitdense subcommand (the first line of its docstring), for ``--help``."""
    lines = ["vitdense subcommands beside LightningCLI's fit, validate, test and predict (each takes --help):"]
    for name, command in sorted(COMMANDS.items()):
        doc = " ".join((command.__doc__ or "").split())
        doc = doc.split("``: ", 1)[-1].split(" (``")[0].split(" (see ``")[0].replace("``", "").rstrip(".")
        lines.append(f"  {name:9s} {doc[:100]}")
    return "\n".join(lines) + "\n"


def _main(args: list[str] | None, run: bool) -> VitdenseCLI | str:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv[:1] in (["-h"], ["--help"]):
        print(commands_help(), flush=True)  # LightningCLI's help below lists only its own four
    return run_lightning(args) if run else lightning_cli(args, run=False)
