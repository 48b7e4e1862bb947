"""The one way a trained model is rebuilt for inference from a run: from its config and checkpoint (``restore``) or
from an exported ``.safetensors`` file (``load``), with everything the fit decided: the band statistics
(``backbone.mean``/``std``), class names and colours, class weights derived from the training masks, and the
inference settings (the config's and command line's ``inference`` and ``overlays`` win over the checkpoint's, as
with ``test --ckpt_path``). ``export`` (every format), ``scene``, ``serve``, ``evaluate`` and ``vitdense.load`` use
it; ``test`` and ``predict`` restore the same through LightningCLI's ``--ckpt_path``
(``VitdenseCLI._parse_ckpt_path``, which ``restore`` shares).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vitdense.engine.messages import checkpoint_file
from vitdense.models.weights import EXPORT_METADATA_KEY, FROZEN_BASE_KEY
from vitdense.tasks.base import BaseTask

if TYPE_CHECKING:
    from vitdense.engine.builder import Run


def restore(config: str | Path, ckpt_path: str | Path, args: Sequence[str] = ()) -> Run:
    """The Trainer, task (the checkpoint's weights, in eval mode) and DataModule of a run.

    The task is built from the checkpoint's hyperparameters over ``config`` (a run folder's ``config.yaml`` too) and
    ``args`` (``--model.*``, ``--data.*``, ``--trainer.*``), as ``test --ckpt_path`` builds it. The backbone's
    pretrained weights are not loaded (the checkpoint holds them), except the frozen base of LoRA adapters, which a
    checkpoint leaves out.
    """
    from vitdense.engine.builder import build  # the CLI's builder; imported here so that `import vitdense` stays light

    # Memory-mapped: build() reads the hyperparameters from the same file again, without reading its tensors twice.
    checkpoint = torch.load(checkpoint_file(ckpt_path), map_location="cpu", weights_only=False, mmap=True)
    built = build(config, args, weights=bool(checkpoint.get(FROZEN_BASE_KEY)), ckpt_path=ckpt_path)
    task = built.model
    task.on_load_checkpoint(checkpoint)  # checks the classes; class weights derived from the training masks
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    return built


def load(path: str | Path, device: str | torch.device = "cpu") -> BaseTask:
    """A task exported with ``export_safetensors`` (or ``vitdense export --format safetensors``), in eval mode.

    Needs no checkpoint, config file or Trainer, and downloads nothing: ``task(images)`` predicts at once.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(EXPORT_METADATA_KEY)
    if meta is None:
        raise ValueError(f"'{path}' holds no vitdense config; export it with `vitdense export --format safetensors`.")
    spec = json.loads(meta)
    module, _, name = spec["task"].rpartition(".")
    task = getattr(importlib.import_module(module), name)(**spec["init_args"])
    load_model(task, str(path), strict=True)  # raises on a missing or unexpected weight
    return task.to(device).eval()


def load_for_inference(
    model_file: str | Path | None,
    config: str | Path | None = None,
    ckpt_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    error: Callable[[str], Any] | None = None,
) -> BaseTask:
    """A task in eval mode from an export (``model_file``) or from a config and its checkpoint (``overrides``: more
    ``--model.*``/``--data.*`` arguments); ``error(message)`` reports a missing argument (default: ValueError)."""
    if model_file is not None:
        return load(model_file)
    if not (config and ckpt_path):
        message = "give --model (an exported .safetensors), or --config with --ckpt_path"
        if error is not None:
            error(message)
        raise ValueError(message)
    return restore(config, ckpt_path, [*overrides, "--trainer.logger", "false"]).model
