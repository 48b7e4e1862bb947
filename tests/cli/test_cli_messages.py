"""What `python -m vitdense` prints, run as a user runs it: a config that cannot be built ends the output as one
message with exit code 2, and Lightning's lines a user cannot act on are left out, real warnings kept.

The default suite calls the entry point in this process as the console script does (`in_process`: `main()` reading
`sys.argv`, its exit code and everything it prints; or `python -m vitdense`'s own module, run as `__main__`), which
checks the same output without importing torch and Lightning again (~11 s a process on 2 cores); the slow tests run a
new process (`vitdense`)."""

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.tiny import PATCH8_VIT_D2
from vitdense.cli.entry import main

DATA = {"class_path": "SyntheticSegmentationDataModule",
        "init_args": {"num_train": 4, "num_val": 2, "image_size": 32, "batch_size": 2}}  # fmt: skip
BACKBONE = {k: v for k, v in PATCH8_VIT_D2.items() if k != "img_size"}  # the CLI links img_size from the data
TRAINER = {"accelerator": "cpu", "precision": "32", "enable_progress_bar": False, "enable_model_summary": False}


def config(tmp_path: Path, trainer: dict | None = None, **model) -> Path:
    init_args = {"backbone": BACKBONE, "head": {"channels": 16, "aux_channels": 8}, **model}
    cfg = {"model": {"class_path": "SegmentationTask", "init_args": init_args}, "data": DATA, "seed_everything": 0,
           "trainer": {**TRAINER, "default_root_dir": str(tmp_path / "runs"), **(trainer or {})}}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def vitdense(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str]]:
    """Exit code and the lines printed (stdout and stderr, as a terminal shows them) of `python -m vitdense ARGS`."""
    env = {k: v for k, v in os.environ.items() if k != "VITDENSE_DEBUG"} | {"HF_HUB_OFFLINE": "1", **env}
    result = subprocess.run([sys.executable, "-m", "vitdense", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    return result.returncode, [line for line in result.stdout.splitlines() if line.strip()]


def in_process(
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    entry: Callable[[], object] = main,
) -> tuple[int, list[str]]:
    """`vitdense ARGS` as the console script runs it (`main()` with no arguments reads `sys.argv`), in this process:
    its exit code and the lines it printed, stdout then stderr (Lightning's log handler keeps the stream it was made
    with, so under pytest's capture its INFO lines may be missing: the tests of Lightning's lines start a process)."""
    monkeypatch.delenv("VITDENSE_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["vitdense", *args])
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    try:
        entry()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else 1
    out, err = capfd.readouterr()
    return code, [line for line in (out + err).splitlines() if line.strip()]


def one_message(code: int, lines: list[str]) -> str:
    """The message of a run that ended with one: exit code 2, the message last, no traceback or usage block."""
    assert code == 2, "\n".join(lines)
    assert lines[-1].startswith("error: "), "\n".join(lines[-5:])
    assert not any(bad in line for line in lines for bad in ("Traceback", "Union subtypes", "usage:")), "\n".join(lines)
    return lines[-1].removeprefix("error: ")


def python_m_vitdense() -> None:
    """What `python -m vitdense` runs: the package's `__main__` module as the main module."""
    runpy.run_module("vitdense", run_name="__main__", alter_sys=True)


# `python -m vitdense`'s module run as the main module, in this process, with the hub offline (conftest.py sets
# HF_HUB_OFFLINE=1 before anything imports huggingface_hub, as the environment of a new process would).
def test_offline_pretrained_weights_end_the_output_as_one_message(tmp_path: Path, capfd, monkeypatch) -> None:
    cfg = str(config(tmp_path, backbone={**BACKBONE, "pretrained": True}))
    offline_pretrained_is_one_message(*in_process(tmp_path, capfd, monkeypatch, "fit", "--config", cfg,
                                                  entry=python_m_vitdense))  # fmt: skip


@pytest.mark.slow  # a new process (~11 s); the test above runs the same module in this process
def test_offline_pretrained_weights_end_the_output_of_a_new_process_as_one_message(tmp_path: Path) -> None:
    cfg = str(config(tmp_path, backbone={**BACKBONE, "pretrained": True}))
    offline_pretrained_is_one_message(*vitdense(tmp_path, "fit", "--config", cfg))


def offline_pretrained_is_one_message(code: int, lines: list[str]) -> None:
    assert one_message(code, lines).startswith(
        "backbone.pretrained: true needs timm's hub weights for 'vit_tiny_patch16_224', which are not in the local "
        "cache, and HF_HUB_OFFLINE is set. Point backbone.pretrained at a local"
    )
    assert "VITDENSE_DEBUG=1" in lines[-2]


def test_unknown_head_key_names_the_key_and_the_valid_ones(tmp_path: Path, capfd, monkeypatch) -> None:
    cfg = str(config(tmp_path, head={"channels": 16, "chanels": 8}))
    code, lines = in_process(tmp_path, capfd, monkeypatch, "fit", "--config", cfg)
    valid = "aux_channels, aux_in_index, aux_weight, channels, dropout, name, pool_scales"
    assert one_message(code, lines) == f"model.init_args.head: unknown key(s) {{'chanels'}}; valid keys are {valid}."


@pytest.mark.slow  # real CLI processes: 7-21 s
def test_num_classes_that_disagree_with_the_data_end_the_output_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    cfg = str(config(tmp_path, num_classes=7))
    message = ("model.init_args.num_classes is 7, but the CLI takes it from the data: data.num_classes gives 4. Set "
               "it on the data only (remove model.init_args.num_classes).")  # fmt: skip
    assert one_message(*vitdense(tmp_path, "validate", "--config", cfg)) == message
    code, lines = vitdense(tmp_path, "validate", "--config", cfg, VITDENSE_DEBUG="1")
    assert code == 1 and any("Traceback" in line for line in lines) and message in lines[-1]


@pytest.mark.slow  # real CLI processes: 7-21 s
def test_estimate_prints_its_table_and_nothing_before(tmp_path: Path) -> None:
    cfg = config(tmp_path, trainer={"precision": "bf16-mixed"})
    code, lines = vitdense(tmp_path, "estimate", "--config", str(cfg))
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("input 32x32, batch 2"), "\n".join(lines[:5])  # not seeding, devices or precision


@pytest.mark.slow  # real CLI processes: 7-21 s
def test_fit_and_validate_print_no_lightning_noise_but_real_warnings(tmp_path: Path) -> None:
    cfg = str(config(tmp_path, trainer={"max_epochs": 1}))
    code, fit = vitdense(tmp_path, "fit", "--config", cfg)
    assert code == 0, "\n".join(fit)
    ckpt = next((tmp_path / "runs").glob("c/version_0/checkpoints/last.ckpt"))
    code, validate = vitdense(tmp_path, "validate", "--config", cfg, "--ckpt_path", str(ckpt))
    assert code == 0, "\n".join(validate)
    text = "\n".join(fit + validate)
    for noise in ("LeafSpec", "litlogger", "litmodels", "Be aware that when using `ckpt_path`", "dirpath has changed",
                  "to estimate number of stepping batches"):  # fmt: skip
        assert noise not in text, noise
    assert "smaller than the logging interval" in "\n".join(fit)  # a warning the user can act on stays
    assert "GPU available" in text and "val/mIoU" in "\n".join(validate)
