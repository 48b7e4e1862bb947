"""Scenes of any size: window-by-window prediction into a georeferenced GeoTIFF equals sliding-window inference on
the whole image, reads each window once, writes in strips, and keeps nodata out."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny import VIT_D2_W32
from vitdense import SegmentationTask
from vitdense.data.formats.raster import Raster, band_statistics, model_input
from vitdense.inference.scenes import predict_scene, scene_logit_tiles
from vitdense.tasks.inference import slide_logits

rasterio = pytest.importorskip("rasterio")


def write_geotiff(path: Path, pixels: np.ndarray, nodata: float | None = None) -> Path:
    """(H, W, C) pixels as a GeoTIFF in UTM 33N with 10 m pixels."""
    from rasterio.transform import from_origin

    height, width, count = pixels.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count, "dtype": pixels.dtype,
               "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 10, 10), "nodata": nodata}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels.transpose(2, 0, 1))
    return path


def seg_task(in_chans: int = 3, **inference) -> SegmentationTask:
    torch.manual_seed(0)
    backbone = {**VIT_D2_W32, "in_chans": in_chans}
    return SegmentationTask(backbone=backbone, num_classes=4, img_size=32, head={"channels": 8, "aux_weight": 0},
                            inference={"mode": "slide", **inference}).eval()  # fmt: skip


@pytest.mark.parametrize("stripe", [2048, 64])  # one stripe; four stripes of 64 columns
def test_scene_logits_equal_sliding_windows_over_the_whole_image(stripe: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (150, 203, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / "scene.tif", pixels)
    task = seg_task()
    with torch.no_grad():
        whole = slide_logits(task, model_input(pixels)[None], (32, 32), (21, 21))[0]
    reads = []
    with Raster(path) as raster:
        read = raster.read
        raster.read = lambda window: reads.append(window) or read(window)  # type: ignore[method-assign]
        tiles = list(scene_logit_tiles(task, raster, (32, 32), (21, 21), batch_size=3, block=16, stripe=stripe))
    logits = torch.full_like(whole, float("nan"))
    for top, left, tile, valid in tiles:
        assert torch.isnan(logits[:, top : top + tile.shape[1], left : left + tile.shape[2]]).all()  # written once
        assert top % 16 == 0 and left % 16 == 0 and valid.all()
        logits[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    torch.testing.assert_close(logits, whole, atol=1e-4, rtol=0)
    windows = 7 * 10  # the slide grid: 7 rows x 10 columns of windows
    assert all(w[2:] == (32, 32) for w in reads) and set(reads) == {r for r in reads}
    if stripe >= 203:  # one stripe: each window decoded once, and nothing else (never the whole scene)
        assert len(reads) == len(set(reads)) == windows
    else:  # windows across a stripe border run in both stripes
        assert len(set(reads)) == windows < len(reads) <= 2 * windows


def test_predicted_scene_is_a_georeferenced_tiled_class_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(1, 60000, (96, 130, 4), dtype=np.uint16)
    pixels[:10, :20] = 0  # nodata corner
    source = write_geotiff(tmp_path / "scene.tif", pixels, nodata=0)
    mean, std = band_statistics([source])
    task = seg_task(in_chans=4)
    task.backbone.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
    task.backbone.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    summary = predict_scene(task, source, tmp_path / "out" / "classes.tif", probabilities=True, block=32)
    with rasterio.open(source) as src, rasterio.open(summary.output) as out:
        assert out.crs == src.crs and out.transform == src.transform and out.shape == src.shape
        assert out.profile["tiled"] and out.profile["compress"] == "deflate" and out.nodata == 255
        classes = out.read(1)
        assert out.colormap(1)[1][:3] == tuple(task.palette()[3:6])
    assert (classes[:10, :20] == 255).all() and (classes[10:] < 4).all()
    with rasterio.open(summary.probabilities) as probs:
        p = probs.read()
    assert p.shape == (4, 96, 130) and not p[:, :10, :20].any()
    assert (np.abs(p[:, 10:].sum(0).astype(int) - 255) <= 2).all()  # probabilities x 255, rounded per class
    top2 = np.sort(p[:, 10:], 0)[-2:].astype(int)
    clear = top2[1] - top2[0] >= 2  # where rounding cannot have swapped the two largest
    assert clear.any() and np.array_equal(p[:, 10:].argmax(0)[clear], classes[10:][clear])
    with pytest.raises(FileExistsError, match="exists"):
        predict_scene(task, source, summary.output)
    with pytest.raises(ValueError, match=r"gives 3 band\(s\).*in_chans=4"):
        predict_scene(task, source, tmp_path / "three.tif", bands=[0, 1, 2])


def test_band_statistics_stream_to_numpys_over_pixels_with_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 40000, (70, 50, 3), dtype=np.uint16)
    b = rng.integers(0, 40000, (33, 91, 3), dtype=np.uint16)
    a[5:9, 3:30] = 0
    paths = [write_geotiff(tmp_path / "a.tif", a, nodata=0), tmp_path / "b.npy"]
    np.save(paths[1], b)
    mean, std = band_statistics(paths, bands=[2, 0], nodata=0, window=16)
    a, b = a[:, :, [2, 0]], b[:, :, [2, 0]]  # nodata counts in the bands read
    values = np.concatenate([a[(a != 0).all(-1)], b[(b != 0).all(-1)]]).astype(np.float64)
    np.testing.assert_allclose(mean, values.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, values.std(0), rtol=1e-6)


def test_scene_command_segments_rasters_from_an_export(tmp_path: Path) -> None:
    from vitdense.deploy.export import export_safetensors
    from vitdense.inference.scenes import scene_main

    model = export_safetensors(seg_task(), tmp_path / "model")
    rng = np.random.default_rng(3)
    scenes = [write_geotiff(tmp_path / f"s{i}.tif", rng.integers(0, 255, (40 + i, 70, 3), dtype=np.uint8))
              for i in range(2)]  # fmt: skip
    text = scene_main(["--model", str(model), "--input", *map(str, scenes), "--output", str(tmp_path / "maps")])
    assert text.count("wrote") == 2
    for i, scene in enumerate(scenes):
        with rasterio.open(tmp_path / "maps" / scene.name) as out:
            assert out.shape == (40 + i, 70) and out.crs.to_epsg() == 32633


def test_scene_is_a_vitdense_subcommand(tmp_path: Path) -> None:
    from vitdense.cli.entry import main
    from vitdense.deploy.export import export_safetensors

    model = export_safetensors(seg_task(), tmp_path / "model")
    scene = write_geotiff(tmp_path / "s.tif", np.zeros((33, 47, 3), np.uint8))
    text = main(["scene", "--model", str(model), "--input", str(scene), "--output", str(tmp_path / "maps")])
    assert "wrote" in text and (tmp_path / "maps" / "s.tif").is_file()


def test_a_scene_keeps_every_region_and_says_so(tmp_path: Path) -> None:
    """A model that keeps a class as one solid object per image (``keep_largest``) is told, for a scene of many
    objects, that the scene's class map keeps every region: the most likely class of each pixel."""
    source = write_geotiff(tmp_path / "scene.tif", np.random.default_rng(2).integers(0, 255, (40, 50, 3), np.uint8))
    plain = predict_scene(seg_task(), source, tmp_path / "plain.tif")
    with pytest.warns(UserWarning, match=r"keep_largest: the model keeps \['class_1'\] as one solid object per image"):
        kept = predict_scene(seg_task(keep_largest=[1]), source, tmp_path / "kept.tif")
    with rasterio.open(plain.output) as a, rasterio.open(kept.output) as b:
        assert np.array_equal(a.read(1), b.read(1))
