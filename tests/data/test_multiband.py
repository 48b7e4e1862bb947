"""Multi-band rasters as segmentation data (data.bands): GeoTIFF and .npy images keep their bands and values, band
statistics come from the training pixels with data and go with the run, nodata is void, and RGB files say how to
read them as rasters."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitdense import SegmentationTask
from vitdense.data import SegmentationFolderDataModule

rasterio = pytest.importorskip("rasterio")


def write_raster_dataset(root: Path, bands: int, nodata: int | None = 0, npy: bool = False) -> Path:
    """train/val of uint16 rasters (the first image of each split with a nodata corner) and class-id PNG masks."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(bands)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i, (h, w) in enumerate([(40, 48), (36, 52)]):
            pixels = rng.integers(100, 5000, (h, w, bands), dtype=np.uint16)
            pixels[:, :, 0] += 3000 * (np.arange(w) > w // 2).astype(np.uint16)  # a band that tells classes apart
            if i == 0 and nodata is not None:
                pixels[:6, :8, 1] = nodata
            if npy:
                np.save(root / split / "images" / f"{i}.npy", pixels)
            else:
                profile = {"driver": "GTiff", "height": h, "width": w, "count": bands, "dtype": "uint16",
                           "nodata": nodata, "crs": "EPSG:32633", "transform": from_origin(0, 0, 10, 10)}  # fmt: skip
                with rasterio.open(root / split / "images" / f"{i}.tif", "w", **profile) as dst:
                    dst.write(pixels.transpose(2, 0, 1))
            mask = (np.arange(w) > w // 2).astype(np.uint8)[None].repeat(h, 0)
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("field\nforest\n")
    return root


def fit_one_epoch(root: Path, bands: list[int], tmp_path: Path, **data) -> tuple[SegmentationTask, str]:
    from lightning.pytorch import Trainer

    dm = SegmentationFolderDataModule(root=str(root), crop_size=32, batch_size=2, bands=bands, **data)
    task = SegmentationTask(backbone={"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 2, "embed_dim": 32,
                            "num_heads": 2}}, num_classes=2, img_size=32, in_chans=dm.in_chans,
                            head={"channels": 8})  # fmt: skip
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(task, dm)
    return task, trainer.checkpoint_callback.best_model_path


@pytest.mark.parametrize(("count", "bands", "npy"), [(4, [2, 1, 0, 3], False), (13, list(range(13)), False),
                                                     (4, [0, 1, 2, 3], True)])  # fmt: skip
def test_band_statistics_of_the_training_pixels_go_with_the_run(count, bands, npy, tmp_path: Path) -> None:
    root = write_raster_dataset(tmp_path / "data", count, nodata=0, npy=npy)
    task, ckpt = fit_one_epoch(root, bands, tmp_path, nodata=0)
    pixels = [np.load(p) if npy else rasterio.open(p).read().transpose(1, 2, 0)
              for p in sorted((root / "train" / "images").iterdir())]  # fmt: skip
    values = np.concatenate([p[:, :, bands][(p[:, :, bands] != 0).all(-1)] for p in pixels]).astype(np.float64)
    np.testing.assert_allclose(task.backbone.mean.flatten().numpy(), values.mean(0), rtol=1e-4)
    np.testing.assert_allclose(task.backbone.std.flatten().numpy(), values.std(0), rtol=1e-4)
    assert task.backbone.in_chans == len(bands)
    restored = SegmentationTask.load_from_checkpoint(ckpt)
    torch.testing.assert_close(restored.backbone.mean, task.backbone.mean)
    torch.testing.assert_close(restored.backbone.std, task.backbone.std)


def test_nodata_pixels_are_void_and_zero_after_normalisation(tmp_path: Path) -> None:
    root = write_raster_dataset(tmp_path / "data", 4, nodata=0)
    dm = SegmentationFolderDataModule(root=str(root), crop_size=32, batch_size=2, bands=[0, 1, 2, 3])
    dm.setup("validate")
    item = dm.dataset("val")[0]
    assert item["image"].shape == (4, 40, 48) and item["image"].dtype == torch.float32
    assert torch.isnan(item["image"][:, :6, :8]).all() and (item["mask"][:6, :8] == 255).all()
    assert not torch.isnan(item["image"][:, 6:]).any() and (item["mask"][6:] != 255).all()
    assert item["image"][0, 10, 10] > 1  # raw uint16 values, not scaled to [0, 1]
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    task = SegmentationTask(backbone={**backbone, "in_chans": 4}, num_classes=2, img_size=32, head={"channels": 8})
    normalised = task.backbone.normalize(item["image"][None])
    assert torch.isfinite(normalised).all() and (normalised[0, :, :6, :8] == 0).all()


def test_rasters_without_bands_and_bad_bands_say_what_to_do(tmp_path: Path) -> None:
    root = write_raster_dataset(tmp_path / "data", 5)
    dm = SegmentationFolderDataModule(root=str(root), crop_size=32, batch_size=2)
    dm.setup("validate")
    with pytest.raises(ValueError, match=r"'.*0\.tif' is a raster of 5 band\(s\) of uint16.*set data\.bands"):
        dm.dataset("val")[0]
    with pytest.raises(ValueError, match=r"data\.bands: \[0, 0\] must be distinct"):
        SegmentationFolderDataModule(root=str(root), bands=[0, 0])
    dm = SegmentationFolderDataModule(root=str(root), crop_size=32, bands=[0, 7])
    dm.setup("validate")
    with pytest.raises(ValueError, match=r"bands: \[0, 7\] asks for band\(s\) \[7\] but '.*' has 5 band"):
        dm.dataset("val")[0]


def test_a_multi_band_folder_fits_through_the_cli_with_only_data_keys(tmp_path: Path) -> None:
    """data.bands alone: the CLI links in_chans into the backbone and the fit computes the band statistics."""
    import yaml

    from vitdense.cli.entry import main

    root = write_raster_dataset(tmp_path / "data", 13, nodata=0)
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    cfg = {"model": {"class_path": "SegmentationTask", "init_args": {"backbone": backbone, "head": {"channels": 8}}},
           "data": {"class_path": "SegmentationFolderDataModule",
                    "init_args": {"root": str(root), "crop_size": 32, "batch_size": 2, "bands": [3, 2, 1, 7]}},
           "trainer": {"accelerator": "cpu", "fast_dev_run": True, "enable_progress_bar": False,
                       "default_root_dir": str(tmp_path / "runs")}}  # fmt: skip
    (tmp_path / "bands.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(tmp_path / "bands.yaml")])
    assert cli.model.backbone.in_chans == 4 and cli.model.hparams.in_chans == 4
    assert cli.model.backbone.mean.flatten()[0] > 100  # uint16 statistics, not ImageNet's
    with pytest.raises(ValueError, match=r"in_chans is 3, but the CLI takes it from the data: the number of data"):
        main(["fit", "--config", str(tmp_path / "bands.yaml"), "--model.init_args.in_chans", "3"])


def test_predict_on_rasters_writes_masks_and_overlays_from_their_first_bands(tmp_path: Path) -> None:
    """predict with data.bands reads the rasters' bands; overlays draw on the first three bands, stretched (a raster
    is no RGB image), nodata black."""
    from vitdense.tasks.mask_files import display_image

    root = write_raster_dataset(tmp_path / "data", 4, nodata=0)
    dm = SegmentationFolderDataModule(root=str(root), crop_size=32, batch_size=2, bands=[0, 1, 2, 3],
                                      predict_dir=str(root / "val" / "images"))  # fmt: skip
    backbone = {"name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
    task = SegmentationTask(backbone={**backbone, "in_chans": 4}, num_classes=2, img_size=32, head={"channels": 8},
                            overlays=True)  # fmt: skip
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    (tmp_path / "out").mkdir()
    with torch.no_grad():
        written = task.save_predictions(task.predict_step(batch, 0), tmp_path / "out")
    assert [p.name for p in written] == ["0.png", "1.png"]
    shown = display_image(root / "val" / "images" / "0.tif")
    assert shown.shape == (40, 48, 3) and shown.dtype == np.uint8 and (shown[:6, :8, 1] == 0).all()
    assert shown.max() == 255 and (tmp_path / "out" / "overlays" / "0.png").is_file()
