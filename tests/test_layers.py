"""The package's layering (written in ``vitdense/__init__.py``'s docstring): each subpackage imports only from its own
layer and those below, nothing imports in a circle, the top level holds subpackages, the CLI is imported by the entry
points alone, every run is built by ``vitdense.engine.builder`` and every model for inference restored by
``vitdense.engine.restore``."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import vitdense

PACKAGE = Path(vitdense.__file__).parent

# Lowest first. Within one layer the rooms may not import each other (models/data; the four users of a run).
LAYERS = [
    {"models", "data"},
    {"cost"},
    {"tasks"},
    {"engine"},
    {"inference", "evaluation", "deploy", "tuning"},
    {"cli"},
]
LAYER = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every vitdense module that ``path`` imports, at the top or inside a function (``from pkg import submodule``
    counts as the submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= {s for s in subs if s in MODULES} or {node.module}
    return {name for name in found if name.split(".")[0] == "vitdense"}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in imports(path) if m in MODULES} for name, path in MODULES.items()}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else None


def importers(module: str) -> set[str]:
    return {name for name, deps in GRAPH.items() if any(d == module or d.startswith(f"{module}.") for d in deps)}


def test_the_top_level_holds_subpackages() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py", "_moved.py"}
    assert not loose, f"modules at the top level: {sorted(loose)}; put each in the subpackage of its concern"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == set(LAYER)


def test_imports_run_downwards() -> None:
    wrong = []
    for name, deps in GRAPH.items():
        here = room(name)
        if here is None:
            continue  # vitdense/__init__.py (the public names) and __main__.py
        for dep in deps:
            there = room(dep)
            if there is None or (there != here and LAYER[there] >= LAYER[here]):
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_in_a_circle() -> None:
    """Tarjan's strongly connected components of the module graph: every one has a single module."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_layering_test_sees_a_wrong_import_and_a_circle() -> None:
    """The checks above fail on what they are for (a graph with an upward import and a circle)."""
    saved = dict(GRAPH)
    try:
        GRAPH["vitdense.models.backbone"] = saved["vitdense.models.backbone"] | {"vitdense.tasks.base"}
        with pytest.raises(AssertionError, match=r"models\.backbone -> vitdense\.tasks\.base"):
            test_imports_run_downwards()
        with pytest.raises(AssertionError, match="import circles"):
            test_no_module_imports_in_a_circle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_only_the_entry_points_import_the_cli() -> None:
    outside = {name for name in importers("vitdense.cli") if not name.startswith("vitdense.cli")}
    assert outside <= {"vitdense.__main__"}


def test_the_lightning_subcommands_and_the_own_ones_share_the_builder() -> None:
    for name in ("evaluation.report", "tuning.tune", "tuning.sweep", "cli.commands", "engine.restore"):
        assert "vitdense.engine.builder" in GRAPH[f"vitdense.{name}"], name


def test_a_model_for_inference_is_rebuilt_from_a_run_in_one_place() -> None:
    """vitdense.engine.restore: export, scene, serve, evaluate and vitdense.load restore a run through it alone."""
    for name in ("evaluation.report", "deploy.export", "inference.scenes", "deploy.serve", "cli.commands"):
        assert "vitdense.engine.restore" in GRAPH[f"vitdense.{name}"], name
    for path in PACKAGE.rglob("*.py"):  # nobody else loads a checkpoint's weights into a task built from a config
        if path.name != "restore.py":
            assert 'load_state_dict(checkpoint["state_dict"])' not in path.read_text(), path


def test_panels_come_from_the_task() -> None:
    """Each task draws its own panel: the panel callback dispatches on no task class."""
    assert not {d for d in GRAPH["vitdense.tasks.panels"] if d.startswith("vitdense.tasks.")}


@pytest.mark.parametrize(
    ("old", "new"),
    [("vitdense.export", "vitdense.deploy"), ("vitdense.scenes", "vitdense.inference.scenes"),
     ("vitdense.data.segmentation", "vitdense.data.datamodules.segmentation")],
)  # fmt: skip
def test_old_module_paths_still_import_and_name_the_new_one(old: str, new: str) -> None:
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(new in str(w.message) for w in caught)


def test_old_public_imports_keep_working() -> None:
    from vitdense.export import export_onnx, load

    from vitdense.evaluation import evaluate
    from vitdense.inference import slide_logits

    assert load is vitdense.load and evaluate is vitdense.evaluate and callable(export_onnx) and callable(slide_logits)
