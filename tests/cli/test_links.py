"""What the CLI takes from the DataModule (classes, ignore_index, the input size): stated once, never overwritten
silently."""

from pathlib import Path

import pytest

from tests.fake_data import write_folder_dataset
from tests.tiny import VIT_D2_W32
from vitdense.cli.entry import main

MODEL = ["--model", "vitdense.SegmentationTask", "--model.backbone", str(VIT_D2_W32).replace("'", '"'),
         "--model.head", '{"channels": 8, "aux_weight": 0}', "--trainer.logger", "false"]  # fmt: skip


def synthetic(size: int = 48) -> list[str]:
    return ["--data", "SyntheticSegmentationDataModule", "--data.num_train", "4", "--data.image_size", str(size)]


def build(*args: str):
    return main([*MODEL, *args], run=False)


def test_img_size_comes_from_the_data() -> None:
    cli = build(*synthetic(48))
    assert cli.datamodule.input_size == 48
    assert cli.model.hparams.img_size == 48
    assert cli.model.backbone_cfg["img_size"] == 48
    assert tuple(cli.model.backbone.model.patch_embed.img_size) == (48, 48)  # pos-embed built for the crop


def test_img_size_comes_from_the_segmentation_crop(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "data")
    cli = build("--data", "SegmentationFolderDataModule", "--data.root", str(root), "--data.crop_size", "64")
    assert cli.datamodule.input_size == 64
    assert cli.model.backbone_cfg["img_size"] == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.img_size", "96"], "model.init_args.img_size is 96"),
        (["--model.num_classes", "7"], "model.init_args.num_classes is 7"),
        (["--model.class_names", "[a, b, c, d]"], "model.init_args.class_names is"),
    ],
)
def test_a_model_value_the_data_replaces_is_an_error(args: list[str], message: str) -> None:
    # jsonargparse overwrote these with the linked values without a word.
    with pytest.raises(ValueError, match=message) as err:
        build(*synthetic(48), *args)
    assert "Set it on the data only" in str(err.value)


def test_a_model_value_equal_to_the_data_is_accepted() -> None:
    cli = build(*synthetic(48), "--model.img_size", "48", "--model.num_classes", "4")
    assert (cli.model.hparams.img_size, cli.model.num_classes) == (48, 4)


def test_backbone_img_size_that_disagrees_with_the_crop_is_an_error() -> None:
    backbone = {**VIT_D2_W32, "img_size": 64}
    with pytest.raises(Exception, match=r"backbone\.img_size is 64 but the task.s img_size is 48"):
        build(*synthetic(48), "--model.backbone", str(backbone).replace("'", '"'))


def test_testing_a_checkpoint_at_another_crop_size_names_the_checkpoint(tmp_path: Path) -> None:
    cli = main(["fit", *MODEL, *synthetic(32), "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    ckpt = tmp_path / "at32.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"checkpoint '.*at32\.ckpt' was trained with img_size=32, but the data gives "
                                         r"img_size=48"):  # fmt: skip
        main(["test", *MODEL, *synthetic(48), "--ckpt_path", str(ckpt)])
