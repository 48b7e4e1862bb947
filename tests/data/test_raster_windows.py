"""Scenes larger than memory as training data: random windows read by windows (never the scene), evaluation tiles
that cover each pixel once, and scenes checked for matching labels, CRS and pixel size."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vitdense.data import RasterSegmentationDataModule
from vitdense.data.formats.raster import Raster

rasterio = pytest.importorskip("rasterio")


def write(path: Path, array: np.ndarray, crs: str = "EPSG:32633", pixel: float = 10.0, nodata=None) -> None:
    from rasterio.transform import from_origin

    array = array[:, :, None] if array.ndim == 2 else array
    h, w, c = array.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": array.dtype, "crs": crs,
               "transform": from_origin(500000, 4600000, pixel, pixel), "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.transpose(2, 0, 1))


def write_scenes(root: Path, sizes=((300, 400), (200, 250)), bands: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, split_sizes in (("train", sizes), ("val", sizes[:1])):
        for i, (h, w) in enumerate(split_sizes):
            pixels = rng.integers(1, 4000, (h, w, bands), dtype=np.uint16)
            pixels[:5, :7] = 0  # no data
            write(root / split / "images" / f"s{i}.tif", pixels, nodata=0)
            write(root / split / "labels" / f"s{i}.tif", (np.arange(w)[None].repeat(h, 0) * 3 // w).astype(np.uint8))
    (root / "classes.txt").write_text("water\nfield\nforest\n")
    return root


def test_training_windows_decode_the_window_not_the_scene(tmp_path: Path, monkeypatch) -> None:
    root = write_scenes(tmp_path / "scenes")
    reads = []
    original = Raster.read
    monkeypatch.setattr(Raster, "read", lambda self, window=None: reads.append((self.path, window)) or
                        original(self, window))  # fmt: skip
    dm = RasterSegmentationDataModule(str(root), crop_size=64, scale_range=(0.5, 2.0), batch_size=4)
    dm.setup("fit")
    train = dm.dataset("train")
    # each pixel about once per epoch: (300*400 + 200*250) / 64**2 windows, shared by area
    assert len(train) == 42 and np.bincount(train.scene_of).tolist() == [30, 12]
    for i in range(len(train)):
        reads.clear()
        item = train[i]
        assert item["image"].shape[0] == 4 and item["image"].shape[1:] == item["mask"].shape
        assert len(reads) == 2 and all(w is not None and w[2] <= 128 and w[3] <= 128 for _, w in reads)
        assert max(item["mask"].shape) <= 64
    torch.manual_seed(1)
    first = [train[i]["path"] for i in range(5)]
    assert first != [train[i]["path"] for i in range(5)]  # other windows on another draw (another epoch)


def test_evaluation_tiles_cover_every_pixel_once_and_nodata_is_void(tmp_path: Path) -> None:
    root = write_scenes(tmp_path / "scenes")
    dm = RasterSegmentationDataModule(str(root), crop_size=64, eval_tile=128)
    dm.setup("validate")
    val = dm.dataset("val")
    cover = np.zeros((300, 400), int)
    for _, (top, left, h, w) in val.tiles:
        cover[top : top + h, left : left + w] += 1
    assert (cover == 1).all() and len(val) == 3 * 4
    item = val[0]
    assert (item["mask"][:5, :7] == 255).all() and torch.isnan(item["image"][:, :5, :7]).all()
    assert (item["mask"][5:] != 255).all() and dm.in_chans == 4 and dm.class_names == ["water", "field", "forest"]


def test_scene_problems_are_listed_with_their_files(tmp_path: Path) -> None:
    root = write_scenes(tmp_path / "scenes")
    write(root / "train" / "labels" / "s1.tif", np.zeros((199, 250), np.uint8))
    write(root / "train" / "images" / "s2.tif", np.ones((50, 60, 4), np.uint16), crs="EPSG:4326", pixel=0.0001)
    write(root / "train" / "labels" / "s2.tif", np.zeros((50, 60), np.uint8), crs="EPSG:4326", pixel=0.0001)
    dm = RasterSegmentationDataModule(str(root), crop_size=64)
    with pytest.raises(ValueError, match=r"2 problem\(s\).*labels/s1\.tif' is 199x250 but image .*s1\.tif' is "
                       r"200x250.*s2\.tif' has CRS EPSG:4326 .*resample"):  # fmt: skip
        dm.setup("fit")


def test_a_scene_dataset_fits_with_its_band_statistics(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    from vitdense import SegmentationTask

    root = write_scenes(tmp_path / "scenes", sizes=((96, 128),))
    dm = RasterSegmentationDataModule(str(root), crop_size=32, eval_tile=64, batch_size=4)
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    task = SegmentationTask(backbone=backbone, num_classes=3, img_size=32, in_chans=dm.in_chans, head={"channels": 8})
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(task, dm)
    assert trainer.global_step == 3 and 0 <= float(trainer.callback_metrics["val/mIoU"]) <= 1
    with rasterio.open(root / "train" / "images" / "s0.tif") as src:
        pixels = src.read().reshape(4, -1).astype(np.float64)
    pixels = pixels[:, (pixels != 0).all(0)]
    np.testing.assert_allclose(task.backbone.mean.flatten().numpy(), pixels.mean(1), rtol=1e-5)
