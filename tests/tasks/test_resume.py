"""Resuming a run killed after the unfreeze epoch from its ``last.ckpt``: the backbone trains on, at the same learning
rates, and no step is repeated, though the best epoch came first (``last.ckpt`` is the newest state, not the best)."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main

KILL_STEP = 6  # 4 steps per epoch, backbone unfrozen from epoch 1 (step 4); validations every 2 steps


def _config(path: Path, root: Path, optimizer: dict, scheduler: dict, kill: bool, run_dir: Path | None = None) -> Path:
    # vitdense's own checkpoints (none named here): the best of val/early (step 2) and last.ckpt.
    callbacks = [{"class_path": "tests.tasks.resume_worker.LrRecorder", "init_args": {"path": str(root / "lrs.jsonl")}}]
    if kill:
        callbacks.insert(0, {"class_path": "tests.tasks.resume_worker.KillAt", "init_args": {"step": KILL_STEP}})
    cfg = {
        "seed_everything": 0,
        "model": {"class_path": "tests.tasks.resume_worker.EarlyPeakTask", "init_args": {
            "backbone": PATCH8_VIT_D2, "unfreeze_at_epoch": 1, "optimizer": optimizer, "scheduler": scheduler}},
        "data": {"class_path": "SyntheticClassificationDataModule",
                 "init_args": {"num_train": 16, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "val_check_interval": 2, "precision": "32", "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "default_root_dir": str(run_dir or root), "callbacks": callbacks},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit_in_a_fork(cfg: Path) -> int:
    """``vitdense fit --config cfg`` in a forked copy of this process (a process of its own for KillAt to SIGKILL, with
    the imports already done: a new interpreter spends ~10 s importing torch and Lightning); its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            torch.set_num_threads(1)  # the parent's OpenMP threads do not exist in a fork: keep torch off them
            main(["fit", "--config", str(cfg)])
        finally:
            os._exit(1)  # never returns into pytest: not killed is exit code 1
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _steps(path: Path) -> dict[int, dict]:
    return {row["step"]: row for row in _rows(path)}


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
    assert _fit_in_a_fork(_config(tmp_path / "killed.yaml", killed, optimizer, scheduler, kill=True)) == -9
    last = killed / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == KILL_STEP  # the validation at step 6 wrote it, though step 2 stays the best
    (best,) = (killed / "checkpoints").glob("best-*.ckpt")
    assert torch.load(best, map_location="cpu", weights_only=False)["global_step"] == 2

    resumed_cfg = _config(tmp_path / "resumed.yaml", killed, optimizer, scheduler, kill=False, run_dir=tmp_path / "r")
    main(["fit", "--config", str(resumed_cfg), "--ckpt_path", str(last)])
    expected, got = _steps(whole / "lrs.jsonl"), _steps(killed / "lrs.jsonl")
    assert [row["step"] for row in _rows(killed / "lrs.jsonl")] == list(range(12))  # each step once: none repeated
    assert max(expected) == 11
    for step in range(KILL_STEP, 12):
        assert got[step]["backbone_trainable"], step
        assert got[step]["lrs"] == pytest.approx(expected[step]["lrs"], rel=1e-9), step
    final = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == 12  # the end of the resumed fit
    key = "backbone.model.blocks.0.attn.qkv.weight"
    assert not torch.equal(final["state_dict"][key], saved["state_dict"][key])  # the backbone trained after resuming
