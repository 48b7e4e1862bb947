"""The package's layering: ``cli`` dispatches, ``commands`` holds the table of subcommands, each subcommand's module
builds what it needs with ``runs`` (the one builder of a Trainer, task and DataModule from a config), and nothing
below calls back up (the old ``evaluation -> cli -> commands -> evaluation`` circle)."""

import ast
from pathlib import Path

import vitdense

PACKAGE = Path(vitdense.__file__).parent


def imports(path: Path) -> set[str]:
    """Every vitdense module that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from vitdense import cli
    return {name for name in found if name.split(".")[0] == "vitdense"}


def importers(module: str) -> set[str]:
    """The files under vitdense/ (relative paths) that import ``module`` or anything inside it."""
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name == module or name.startswith(f"{module}.") for name in imports(path))
    }


def test_only_the_entry_points_import_the_cli() -> None:
    assert importers("vitdense.cli") <= {"__main__.py"}


def test_only_the_cli_imports_the_subcommand_table() -> None:
    assert importers("vitdense.commands") == {"cli.py"}


def test_the_builder_is_below_every_subcommand() -> None:
    from vitdense.commands import COMMANDS

    rooms = {COMMANDS[name].__module__ for name in COMMANDS} | {"vitdense.commands", "vitdense.cli"}
    rooms |= {f"vitdense.{name}" for name in ("estimate", "evaluation", "export", "scenes", "serve", "sweep", "tune")}
    for low in ("runs.py", "lightning_cli.py", "restore.py"):
        assert not imports(PACKAGE / low) & rooms, low


def test_the_lightning_subcommands_and_the_own_ones_share_the_builder() -> None:
    for room in ("evaluation.py", "tune.py", "sweep.py", "commands.py"):
        assert "vitdense.runs" in imports(PACKAGE / room), room
    assert "vitdense.runs" in imports(PACKAGE / "restore.py")


def test_a_model_for_inference_is_rebuilt_from_a_run_in_one_place() -> None:
    """vitdense.restore: export, scene, serve, evaluate and vitdense.load restore a run through it alone."""
    for room in ("evaluation.py", "export.py", "scenes.py", "serve.py", "commands.py"):
        assert "vitdense.restore" in imports(PACKAGE / room), room
    for room in PACKAGE.rglob("*.py"):  # nobody else loads a checkpoint's weights into a task built from a config
        if room.name != "restore.py":
            assert 'load_state_dict(checkpoint["state_dict"])' not in room.read_text(), room
