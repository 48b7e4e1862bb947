"""Test-wide settings: never touch the network, keep CPU runs small and deterministic.

The tests mirror the package (tests/models, tests/tasks, tests/data, tests/cli; top level: estimate, inference,
losses and end-to-end runs). Shared helpers are plain modules: tests/tiny.py holds every tiny backbone config,
tests/fake_data.py the fake dataset layouts.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# One thread per pytest-xdist worker (the default suite runs 2 workers: addopts -n 2), 2 threads in one process
# (-n 0 or -p no:xdist). The tiny models' ops are too small for two threads: on 2 idle cores the suite took 246 s in
# one process of 1 thread, 252 s with 2 threads, 152 s on 2 workers of 1 thread (2026-12-07). VITDENSE_TEST_THREADS
# overrides it (1 where other jobs hold the cores: there two threads wait on each other at every op).
torch.set_num_threads(
    int(os.environ.get("VITDENSE_TEST_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"))
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path, str], tuple[Path, Path]]:
    """``tiny_run(root, kind)``: ``tests.tiny.train_tiny_run(root, kind)``'s config and last checkpoint, the run trained
    once per kind in a session (2-11 s a fit on 2 busy cores) and copied into ``root`` for each caller."""
    from tests.tiny import copy_tiny_run, train_tiny_run

    trained: dict[str, Path] = {}

    def run(root: Path, kind: str) -> tuple[Path, Path]:
        if kind not in trained:
            base = tmp_path_factory.mktemp(f"tiny_run_{kind}")
            with torch.random.fork_rng(devices=[]):  # the same run whichever test asks first; the caller's seed kept
                torch.manual_seed(0)
                train_tiny_run(base, kind)
            trained[kind] = base
        return copy_tiny_run(trained[kind], root, kind)

    return run
