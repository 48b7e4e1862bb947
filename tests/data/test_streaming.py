"""Datasets larger than a disk: any segmentation DataModule written as LitData chunks and streamed back; each sample
once per epoch, also over two processes; a fit stopped mid-epoch resumes where it stopped; val scores equal the
folder's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from vitdense import SegmentationTask
from vitdense.data import SegmentationFolderDataModule

pytest.importorskip("litdata")
from vitdense.data.datamodules.streaming import StreamingSegmentationDataModule, write_stream

BACKBONE = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
ARGS = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
        "num_sanity_val_steps": 0}  # fmt: skip


def folder(root: Path, train: int = 12, val: int = 5) -> Path:
    """A colour-mask dataset (so the stream carries labels already resolved through the class table)."""
    rng = np.random.default_rng(0)
    colors = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            h, w = 32 + 4 * (i % 3), 40
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.png")
            ids = rng.integers(0, 3, (h, w))
            Image.fromarray(np.array(colors, np.uint8)[ids]).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("0 sky 0,0,0\n1 road 255,0,0\n2 tree 0,255,0\n")
    return root


class Seen(Callback):
    def __init__(self) -> None:
        self.train: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train += list(batch["index"])


@pytest.fixture
def stream(tmp_path: Path) -> tuple[Path, Path]:
    root = folder(tmp_path / "data")
    counts = write_stream(SegmentationFolderDataModule(str(root), crop_size=32), tmp_path / "stream")
    assert counts == {"train": 12, "val": 5}
    return root, tmp_path / "stream"


def task() -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(backbone=BACKBONE, num_classes=3, img_size=32, head={"channels": 8})


def test_stream_holds_the_classes_and_val_scores_equal_the_folders(stream) -> None:
    root, path = stream
    data = StreamingSegmentationDataModule(str(path), crop_size=32, batch_size=2)
    assert data.class_names == ["sky", "road", "tree"] and data.class_colors[1] == (255, 0, 0)
    model = task()
    streamed = Trainer(**ARGS).validate(model, data)[0]
    read = Trainer(**ARGS).validate(model, SegmentationFolderDataModule(str(root), crop_size=32, batch_size=2))[0]
    assert streamed == pytest.approx(read, abs=1e-6)
    with pytest.raises(FileExistsError, match="not empty"):
        write_stream(SegmentationFolderDataModule(str(root), crop_size=32), path)


def test_a_fit_stopped_mid_epoch_resumes_where_it_stopped(stream, tmp_path: Path) -> None:
    _, path = stream
    first, rest = Seen(), Seen()
    # a checkpoint every 2 steps, and the run stops after the second (as if killed there)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    data = StreamingSegmentationDataModule(str(path), crop_size=32, batch_size=2, seed=3)
    Trainer(max_steps=2, limit_val_batches=0, callbacks=[first, checkpoint], default_root_dir=str(tmp_path),
            **ARGS).fit(task(), data)  # fmt: skip
    (saved,) = (tmp_path / "ckpt").glob("*step=2.ckpt")
    data = StreamingSegmentationDataModule(str(path), crop_size=32, batch_size=2, seed=3)
    Trainer(max_epochs=1, limit_val_batches=0, callbacks=[rest], default_root_dir=str(tmp_path),
            enable_checkpointing=False, **ARGS).fit(task(), data, ckpt_path=str(saved))  # fmt: skip
    assert len(first.train) == 4 and len(rest.train) == 8
    assert sorted(first.train + rest.train) == list(range(12))


@pytest.mark.slow  # two processes: ~25 s
def test_two_processes_see_each_sample_once(stream, tmp_path: Path) -> None:
    _, path = stream
    out = tmp_path / "out"
    out.mkdir()
    worker = Path(__file__).parents[1] / "stream_worker.py"
    subprocess.run([sys.executable, str(worker), str(out), str(path)], check=True, timeout=300,
                   cwd=Path(__file__).parents[2])  # fmt: skip
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    train = ranks[0]["train"] + ranks[1]["train"]
    val = ranks[0]["val"] + ranks[1]["val"]
    assert sorted(train) == list(range(12)) and sorted(val) == list(range(5))
    assert len(ranks[0]["train"]) == len(ranks[1]["train"])
    assert ranks[0]["metrics"]["val/mIoU"] == ranks[1]["metrics"]["val/mIoU"]


def test_stream_command_and_fit_through_the_cli(tmp_path: Path) -> None:
    """`vitdense stream` converts a config's data; a fit through the real CLI trains from the stream."""
    import yaml

    from vitdense.cli.entry import main

    root = folder(tmp_path / "data", train=4, val=2)
    data = {"class_path": "SegmentationFolderDataModule", "init_args": {"root": str(root), "crop_size": 32}}
    (tmp_path / "folder.yaml").write_text(yaml.safe_dump({"data": data}))
    text = main(["stream", "--config", str(tmp_path / "folder.yaml"), "--output", str(tmp_path / "s"),
                 "--splits", "train", "val"])  # fmt: skip
    assert "train 4, val 2" in text
    cfg = {"model": {"class_path": "SegmentationTask", "init_args": {"backbone": BACKBONE, "head": {"channels": 8}}},
           "data": {"class_path": "StreamingSegmentationDataModule",
                    "init_args": {"root": str(tmp_path / "s"), "crop_size": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "fast_dev_run": True, "enable_progress_bar": False,
                       "default_root_dir": str(tmp_path / "runs")}}  # fmt: skip
    (tmp_path / "stream.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(tmp_path / "stream.yaml")])
    assert cli.model.num_classes == 3 and cli.model.class_names == ["sky", "road", "tree"]
    assert cli.trainer.global_step == 1
