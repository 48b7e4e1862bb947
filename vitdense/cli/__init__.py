"""The command line: ``python -m vitdense`` / ``vitdense`` (``entry.main``) dispatches LightningCLI's subcommands and
vitdense's own, whose table is ``commands``. The top of the package: it may import everything, nothing imports it."""

from vitdense.cli.entry import main

__all__ = ["main"]
