"""Runs: the LightningCLI of vitdense (``lightning_cli``), the one builder of a Trainer, task and DataModule from a
config (``builder``), the one place a model for inference is rebuilt from a run (``restore``: band statistics, class
weights, names and colours, inference settings) and the messages a user sees when a config is wrong (``messages``).

Below inference, evaluation, deploy, tuning and the CLI, which all build and restore through it; above the tasks.
"""

from vitdense.engine.builder import Run, build, free_folder, lightning_cli, run_folder, run_lightning
from vitdense.engine.restore import load, load_for_inference, restore

__all__ = ["Run", "build", "free_folder", "lightning_cli", "load", "load_for_inference", "restore", "run_folder",
           "run_lightning"]  # fmt: skip
