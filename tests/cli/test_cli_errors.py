"""Values a run cannot use end the output as one `error:` line naming the key and the value, exit code 2, no
traceback (run as a user runs it: the entry point reading sys.argv, and under -m slow a new process per case): a batch
size of 0, a negative learning rate written either way, a checkpoint that is not there, a data.root that does not
exist; and Lightning's sync_dist advice on several processes is left out."""

import warnings
from pathlib import Path

import pytest
import yaml
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.utilities import rank_zero_warn

from tests.cli.test_cli_messages import config, in_process, one_message, vitdense
from tests.fake_data import write_folder_dataset
from vitdense.cli.entry import main
from vitdense.engine.messages import ConfigError, drop_noise

CASES = {
    "batch_size_0": (("--data.init_args.batch_size", "0"), "data.batch_size is 0; it must be >= 1"),
    "num_workers_negative": (("--data.init_args.num_workers", "-1"), "data.num_workers is -1; it must be >= 0"),
    # argparse took "-3e-4" for an option ("expected one argument"); "=-3e-4" reached torch's optimizer at the fit
    "lr_negative_spaced": (("--model.init_args.optimizer.lr", "-3e-4"), "model.init_args.optimizer.lr is -0.0003; a"),
    "lr_negative_equals": (("--model.init_args.optimizer.lr=-3e-4",), "model.init_args.optimizer.lr is -0.0003; a"),
    "ckpt_missing": (("--ckpt_path", "nothere.ckpt"), "--ckpt_path 'nothere.ckpt' does not exist. Give a checkpoint"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_value_the_run_cannot_use_ends_the_output_as_one_message(
    tmp_path: Path, case: str, capfd, monkeypatch
) -> None:
    args, message = CASES[case]
    code, lines = in_process(tmp_path, capfd, monkeypatch, "fit", "--config", str(config(tmp_path)), *args)
    assert one_message(code, lines).startswith(message), lines[-1]


# A new process each (7-20 s); the default suite checks the same output in-process (the test above, each case), and
# `python -m vitdense`'s module (in-process) by test_cli_messages.py's offline-weights test.
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_value_the_run_cannot_use_ends_the_output_of_a_new_process_as_one_message(tmp_path: Path, case: str) -> None:
    args, message = CASES[case]
    code, lines = vitdense(tmp_path, "fit", "--config", str(config(tmp_path)), *args)
    assert one_message(code, lines).startswith(message), lines[-1]


@pytest.mark.parametrize("case", [c for c in CASES if c != "ckpt_missing"])
def test_a_value_the_config_cannot_use_is_refused_naming_the_key_and_the_value(tmp_path: Path, case: str) -> None:
    """What the command line turns into one message: a ConfigError raised while parsing and building."""
    args, message = CASES[case]
    with pytest.raises(ConfigError) as raised:
        main(["--config", str(config(tmp_path)), *args], run=False)
    assert str(raised.value).startswith(message)


def test_a_data_root_that_does_not_exist_ends_the_fit_as_one_message(tmp_path: Path, capfd, monkeypatch) -> None:
    # num_classes given: the DataModule is built without reading the root, which the fit's data setup then scans
    init_args = {"root": str(tmp_path / "nowhere"), "num_classes": 3, "crop_size": 32, "batch_size": 2}
    data = {"class_path": "SegmentationFolderDataModule", "init_args": init_args}
    cfg = config(tmp_path)
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "data": data}))
    code, lines = in_process(tmp_path, capfd, monkeypatch, "fit", "--config", str(cfg))
    message = one_message(code, lines)
    assert message.startswith(f"data.root: the dataset root '{tmp_path / 'nowhere'}' does not exist."), message
    assert "vitdense data --config" in lines[-2]


def test_a_crop_larger_than_every_training_image_is_warned_about_naming_the_key(tmp_path: Path) -> None:
    from vitdense.data import SegmentationFolderDataModule

    root = write_folder_dataset(tmp_path / "data")  # 48x40 and 52x36 (w x h), the smaller by area first
    dm = SegmentationFolderDataModule(str(root), crop_size=512)
    with pytest.warns(UserWarning, match=r"data\.crop_size is 512, larger than every training image") as caught:
        dm.setup("fit")
    text = str(caught[0].message)
    assert "(52x36 to 48x40, w x h)" in text and "at most 52" in text, text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a crop that fits the largest image is fine
        SegmentationFolderDataModule(str(root), crop_size=52).setup("fit")


def test_the_data_report_warns_of_a_crop_larger_than_every_training_image(tmp_path: Path) -> None:
    from vitdense.data import SegmentationFolderDataModule
    from vitdense.data.report import summarize

    root = write_folder_dataset(tmp_path / "data")
    text = summarize(SegmentationFolderDataModule(str(root), crop_size=64)).table()
    assert "\nwarning: data.crop_size is 64, larger than every training image (52x36 to 48x40, w x h)" in text, text
    assert "warning:" not in summarize(SegmentationFolderDataModule(str(root), crop_size=48)).table()


def test_lightnings_sync_dist_advice_is_left_out_and_real_warnings_kept() -> None:
    # Lightning's text (lightning/pytorch/trainer/connectors/logger_connector/result.py), once per value logged per
    # epoch on several processes; vitdense reduces those values over the processes itself.
    advice = ("It is recommended to use `self.log('val/mIoU', ..., sync_dist=True)` when logging on epoch level in "
              "distributed setting to accumulate the metric across devices.")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drop_noise()
        rank_zero_warn(advice, category=PossibleUserWarning)
        rank_zero_warn("a warning the user can act on", category=PossibleUserWarning)
    assert [str(w.message) for w in caught] == ["a warning the user can act on"]


@pytest.mark.slow  # three processes: 40-90 s
def test_a_fit_on_several_processes_prints_no_sync_dist_advice(tmp_path: Path) -> None:
    trainer = {"devices": 3, "strategy": "ddp", "max_steps": 1, "num_sanity_val_steps": 0}
    code, lines = vitdense(tmp_path, "fit", "--config", str(config(tmp_path, trainer=trainer)))
    assert code == 0, "\n".join(lines[-20:])
    assert "Starting with 3 processes" in "\n".join(lines)
    assert not [line for line in lines if "sync_dist" in line], "\n".join(lines)
