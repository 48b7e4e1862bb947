"""``last.ckpt`` is the end of the fit, whichever epoch was best and whatever Lightning's own ``save_last`` rule is.

The fits below monitor a metric that peaks at the first validation (step 4, ``EarlyPeakTask``), so that the best
checkpoint is written there and never again: a ``last.ckpt`` written only beside a best one would hold step 4.
"""

import json
import signal
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main

STEPS_PER_EPOCH = 4  # 16 training images in batches of 4
WORKER = "tests.tasks.resume_worker"  # EarlyPeakTask, LrRecorder


class InterruptAt(L.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C does) when training reaches ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def _config(tmp_path: Path, name: str = "early", callbacks: tuple[dict, ...] = (), **trainer) -> Path:
    record = {"class_path": f"{WORKER}.LrRecorder", "init_args": {"path": str(tmp_path / f"{name}.jsonl")}}
    cfg = {
        "seed_everything": 0,
        "model": {"class_path": f"{WORKER}.EarlyPeakTask", "init_args": {"backbone": PATCH8_VIT_D2}},
        "data": {"class_path": "SyntheticClassificationDataModule",
                 "init_args": {"num_train": 16, "num_val": 4, "image_size": 32, "batch_size": 4}},
        "trainer": {"accelerator": "cpu", "precision": "32", "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path),
                    "callbacks": [record, *callbacks], **trainer},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_last_ckpt_is_the_end_of_a_fit_whose_best_epoch_came_first(tmp_path: Path) -> None:
    cli = main(["fit", "--config", str(_config(tmp_path, max_epochs=4))])
    ckpts = tmp_path / "checkpoints"
    assert cli.trainer.global_step == 16
    assert _step(ckpts / "last.ckpt") == cli.trainer.global_step
    (best,) = ckpts.glob("best-*.ckpt")
    assert _step(best) == STEPS_PER_EPOCH  # the best stays the best
    assert Path(cli.trainer.checkpoint_callback.last_model_path) == ckpts / "last.ckpt"


def test_last_ckpt_of_a_fit_ended_by_max_steps_mid_epoch_resumes_without_repeating_a_step(tmp_path: Path) -> None:
    main(["fit", "--config", str(_config(tmp_path / "a", max_steps=10))])
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert _step(last) == 10  # no validation at step 10: written when the fit ended

    resumed = _config(tmp_path / "b", max_steps=14)
    cli = main(["fit", "--config", str(resumed), "--ckpt_path", str(last)])
    assert _steps(tmp_path / "b" / "early.jsonl") == [10, 11, 12, 13]
    assert _step(tmp_path / "b" / "checkpoints" / "last.ckpt") == cli.trainer.global_step == 14


def test_last_ckpt_after_ctrl_c_holds_the_step_reached(tmp_path: Path) -> None:
    interrupt = {"class_path": f"{__name__}.InterruptAt", "init_args": {"step": 6}}
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning ends a fit stopped by Ctrl-C with exit code 1
            main(["fit", "--config", str(_config(tmp_path, callbacks=(interrupt,), max_epochs=4))])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 6
