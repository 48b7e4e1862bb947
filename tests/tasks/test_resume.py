"""Resuming a run killed after the unfreeze epoch: the backbone trains on, at the same learning rates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli import main

WORKER = Path(__file__).with_name("resume_worker.py")
REPO = Path(__file__).resolve().parents[2]  # on the worker's path: its callbacks are `tests.tasks.resume_worker.*`
KILL_STEP = 6  # 4 steps per epoch, backbone unfrozen from epoch 1 (step 4)


def _config(path: Path, root: Path, optimizer: dict, scheduler: dict, kill: bool, run_dir: Path | None = None) -> Path:
    callbacks = [
        {"class_path": "tests.tasks.resume_worker.LrRecorder", "init_args": {"path": str(root / "lrs.jsonl")}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(root / "ckpt"), "every_n_train_steps": 1, "save_last": True}},
    ]  # fmt: skip
    if kill:
        callbacks.insert(0, {"class_path": "tests.tasks.resume_worker.KillAt", "init_args": {"step": KILL_STEP}})
    cfg = {
        "seed_everything": 0,
        "model": {"class_path": "ClassificationTask", "init_args": {
            "backbone": PATCH8_VIT_D2, "unfreeze_at_epoch": 1, "optimizer": optimizer, "scheduler": scheduler}},
        "data": {"class_path": "SyntheticClassificationDataModule",
                 "init_args": {"num_train": 16, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "precision": "32", "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "default_root_dir": str(run_dir or root), "callbacks": callbacks},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


def _steps(path: Path) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, path.read_text().splitlines())}


OPTIMIZERS = {
    "adamw_poly": ({"lr": 1e-3, "layer_decay": 0.75}, {"name": "poly", "warmup_steps": 2}),
    "sgd_steplr": ({"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9}},
                   {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}),
}  # fmt: skip


@pytest.mark.parametrize("recipe", ["adamw_poly", pytest.param("sgd_steplr", marks=pytest.mark.slow)])
def test_resume_after_sigkill_past_the_unfreeze_epoch(tmp_path: Path, recipe: str) -> None:
    optimizer, scheduler = OPTIMIZERS[recipe]
    whole = tmp_path / "whole"
    main(["fit", "--config", str(_config(tmp_path / "whole.yaml", whole, optimizer, scheduler, kill=False))])

    killed = tmp_path / "killed"
    cfg = _config(tmp_path / "killed.yaml", killed, optimizer, scheduler, kill=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(WORKER), str(cfg)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == -9, result.stderr[-3000:]
    last = killed / "ckpt" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == KILL_STEP

    resumed_cfg = _config(tmp_path / "resumed.yaml", killed, optimizer, scheduler, kill=False, run_dir=tmp_path / "r")
    main(["fit", "--config", str(resumed_cfg), "--ckpt_path", str(last)])
    expected, got = _steps(whole / "lrs.jsonl"), _steps(killed / "lrs.jsonl")
    assert max(got) == max(expected) == 11
    for step in range(KILL_STEP, 12):
        assert got[step]["backbone_trainable"], step
        assert got[step]["lrs"] == pytest.approx(expected[step]["lrs"], rel=1e-9), step
    final = torch.load(killed / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    key = "backbone.model.blocks.0.attn.qkv.weight"
    assert not torch.equal(final[key], saved["state_dict"][key])  # the backbone trained after resuming
