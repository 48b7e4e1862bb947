"""Test-wide settings: never touch the network, keep CPU runs small and deterministic.

The tests mirror the package (tests/models, tests/tasks, tests/data, tests/cli; top level: estimate, inference,
losses and end-to-end runs). Shared helpers are plain modules: tests/tiny.py holds every tiny backbone config,
tests/fake_data.py the fake dataset layouts.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
