"""Every shipped config parses through the real CLI and builds its model, on fake copies of the data it names."""

from pathlib import Path

import pytest
import torch
import yaml

from tests.fake_data import FAKE_LAYOUTS, write_coco2017, write_coco_folder, write_folder_dataset, write_image_folder
from tests.models.test_layer_decay import TABLES, assert_layer_decay_matches
from vitdense.cli.entry import main
from vitdense.tasks.base import BaseTask

OTHER_LAYOUTS = {
    "ImageFolderDataModule": write_image_folder,
    "CocoDetectionDataModule": write_coco_folder,
    "COCO2017DataModule": write_coco2017,
    "CocoInstanceDataModule": write_coco_folder,  # the fake boxes have no segmentation: read only at training
    "COCO2017InstanceDataModule": write_coco2017,
}

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses_and_builds(config: Path, tmp_path: Path) -> None:
    """Each shipped config parses through the real CLI and builds its model (weights never downloaded)."""
    cfg = yaml.safe_load(config.read_text())
    backbone = cfg["model"]["init_args"].get("backbone")
    if isinstance(backbone, dict):
        backbone["pretrained"] = False
    data_args = cfg["data"].setdefault("init_args", {})
    benchmark = {**FAKE_LAYOUTS, **OTHER_LAYOUTS}.get(cfg["data"]["class_path"].rsplit(".", 1)[-1])
    if benchmark is not None:  # a fake copy of the benchmark's official layout
        data_args["root"] = str(benchmark(tmp_path / "data"))
    elif "root" in data_args:
        data_args["root"] = str(write_folder_dataset(tmp_path / "data", num_classes=data_args.get("num_classes", 3)))
        data_args.pop("num_classes", None)
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(cfg))
    cli = main(["--config", str(path)], run=False)
    assert isinstance(cli.model, BaseTask)
    optimizer = cli.model.optimizer_cfg
    table = TABLES.get(cli.model.backbone_cfg["name"].split(".")[0])
    if optimizer["layer_decay"] is not None and table is not None:  # published recipes: the BEiT/mmseg rule
        assert_layer_decay_matches(cli.model, table, optimizer["layer_decay"], optimizer["lr"])
    with torch.no_grad():
        assert len(cli.model.eval()(torch.rand(1, 3, 64, 64))) == 1
