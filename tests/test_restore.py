"""The checkpoint you test is the one you trained: a multi-band run scored through every path that rebuilds it
(``test`` and ``predict`` with ``--ckpt_path``, ``vitdense.evaluate``, ``scene`` from the config and checkpoint or
from the run folder's config.yaml, ``scene --model`` of the safetensors export, ``vitdense.load``, the ONNX runner)
gives the class map of the fitted model, normalised with the fit's band statistics (``vitdense.engine.restore``)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitdense import SegmentationTask
from vitdense.cli.entry import main
from vitdense.tasks.metrics import segmentation_scores

rasterio = pytest.importorskip("rasterio")

BANDS = 4
SIZE = 32  # the training crop: one window of `scene` and the whole image of `predict` and the ONNX graph alike


def write_rasters(folder: Path, count: int, rng: np.random.Generator) -> None:
    """``count`` uint16 rasters of BANDS bands and their masks: class 1 where band 2 is bright (a random half-plane
    per image, so the map has both classes in many shapes)."""
    from rasterio.transform import from_origin

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(1000, 3000, (SIZE, SIZE, BANDS), dtype=np.uint16)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        angle = rng.uniform(0, 2 * np.pi)
        mask = ((xx - SIZE / 2) * np.cos(angle) + (yy - SIZE / 2) * np.sin(angle) > 0).astype(np.uint8)
        pixels[:, :, 2] += 2500 * mask.astype(np.uint16)
        profile = {"driver": "GTiff", "height": SIZE, "width": SIZE, "count": BANDS, "dtype": "uint16",
                   "crs": "EPSG:32633", "transform": from_origin(500000, 4600000, 10, 10)}  # fmt: skip
        with rasterio.open(folder / "images" / f"{i}.tif", "w", **profile) as dst:
            dst.write(pixels.transpose(2, 0, 1))
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny 4-band segmentation run fitted through the CLI; its test split is ONE raster."""
    tmp = tmp_path_factory.mktemp("restore")
    rng = np.random.default_rng(0)
    root = tmp / "data"
    for split, count in (("train", 8), ("val", 2), ("test", 1)):
        write_rasters(root / split, count, rng)
    (root / "classes.txt").write_text("field\nforest\n")
    backbone = {"name": "vit_tiny_patch16_224", "pretrained": False,
                "model_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}}  # fmt: skip
    cfg = {
        "model": {"class_path": "SegmentationTask", "init_args": {
            "backbone": backbone, "head": {"channels": 8, "aux_weight": 0}, "log_images": 0,
            "optimizer": {"lr": 3e-3}, "scheduler": {"warmup_steps": 0}}},
        "data": {"class_path": "SegmentationFolderDataModule", "init_args": {
            "root": str(root), "crop_size": SIZE, "batch_size": 4, "bands": list(range(BANDS)), "scale_range": [1, 1]}},
        "trainer": {"accelerator": "cpu", "max_steps": 8, "check_val_every_n_epoch": 4, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp / "runs")},
    }  # fmt: skip
    config = tmp / "bands.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(config)])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)
    stats = cli.model.backbone_cfg["mean"], cli.model.backbone_cfg["std"]
    assert stats[0] is not None and min(stats[0]) > 1000  # the fit's band statistics (uint16), not ImageNet's
    raster = root / "test" / "images" / "0.tif"
    # Lightning's own restoration of the checkpoint (its hyperparameters hold the band statistics): the reference.
    fitted = SegmentationTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    reference = class_map(fitted, raster)
    assert set(np.unique(reference)) == {0, 1}, "the fitted model should tell the classes apart"
    mask = np.array(Image.open(root / "test" / "masks" / "0.png"))
    confusion = np.bincount(2 * mask.ravel() + reference.ravel(), minlength=4).reshape(2, 2)
    miou = float(segmentation_scores(torch.tensor(confusion))["mIoU"])
    return {"tmp": tmp, "config": config, "ckpt": ckpt, "stats": stats, "raster": raster, "reference": reference,
            "mIoU": miou}  # fmt: skip


def pixels(raster: Path) -> np.ndarray:
    with rasterio.open(raster) as src:
        return src.read().transpose(1, 2, 0)


@torch.no_grad()
def class_map(task: SegmentationTask, raster: Path) -> np.ndarray:
    image = torch.from_numpy(pixels(raster).astype(np.float32).transpose(2, 0, 1))
    return task(image[None])[0].argmax(0).numpy()


def read_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_test_evaluate_and_predict_score_the_fitted_model(run: dict) -> None:
    from vitdense import evaluate

    expected = run["mIoU"]
    args = ["--config", str(run["config"]), "--ckpt_path", str(run["ckpt"])]
    tested = main(["test", *args, "--trainer.logger", "false"])
    assert float(tested.trainer.callback_metrics["test/mIoU"]) == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(tested.model.backbone.mean.flatten(), torch.tensor(run["stats"][0]))
    report = evaluate(run["config"], run["ckpt"], "test")
    assert report.metrics["test/mIoU"] == pytest.approx(expected, abs=1e-6)
    root = run["tmp"] / "predict-runs"
    main(["predict", *args, "--data.predict_dir", str(run["raster"].parent), "--trainer.default_root_dir", str(root)])
    (written,) = root.glob("predictions/*/0.png")
    np.testing.assert_array_equal(np.array(Image.open(written)), run["reference"])


def test_scene_from_the_config_and_from_the_export_and_vitdense_load(run: dict) -> None:
    """scene from config + checkpoint and from the safetensors export (`scene --model`); vitdense.load of that
    export."""
    import vitdense

    out, raster, ckpt = run["tmp"] / "scenes", str(run["raster"]), str(run["ckpt"])
    config = str(run["config"])
    main(["scene", "--config", config, "--ckpt_path", ckpt, "--input", raster, "--output", str(out / "ckpt")])
    np.testing.assert_array_equal(read_map(out / "ckpt" / "0.tif"), run["reference"])
    model = run["tmp"] / "export" / "bands.safetensors"
    main(["export", "--config", config, "--ckpt_path", ckpt, "--output", str(model)])
    main(["scene", "--model", str(model), "--input", raster, "--output", str(out / "model")])
    np.testing.assert_array_equal(read_map(out / "model" / "0.tif"), run["reference"])
    loaded = vitdense.load(model)
    assert loaded.backbone_cfg["mean"] == pytest.approx(run["stats"][0])
    np.testing.assert_array_equal(class_map(loaded, run["raster"]), run["reference"])


def test_the_run_folders_config_yaml_is_a_config_for_scene_export_evaluate_and_serve(run: dict) -> None:
    """The config.yaml that fit writes into the run folder (with `ckpt_path: null`, `weights_only: null`)."""
    from vitdense import evaluate
    from vitdense.engine.builder import run_folder
    from vitdense.engine.restore import load_for_inference

    config, ckpt = run_folder(run["ckpt"]) / "config.yaml", str(run["ckpt"])
    assert "ckpt_path" in yaml.safe_load(config.read_text())
    out = run["tmp"] / "from-run-folder"
    main(["scene", "--config", str(config), "--ckpt_path", ckpt, "--input", str(run["raster"]), "--output", str(out)])
    np.testing.assert_array_equal(read_map(out / "0.tif"), run["reference"])
    text = main(["export", "--config", str(config), "--ckpt_path", ckpt, "--output", str(out / "model.safetensors")])
    assert "wrote" in text
    assert evaluate(config, ckpt, "test").metrics["test/mIoU"] == pytest.approx(run["mIoU"], abs=1e-6)
    served = load_for_inference(None, config, ckpt)  # what `vitdense serve --config ... --ckpt_path` serves
    np.testing.assert_array_equal(class_map(served, run["raster"]), run["reference"])


@pytest.mark.slow  # the ONNX export alone takes 20-50 s on 2 CPU cores
def test_the_onnx_export_normalises_with_the_fits_band_statistics(run: dict) -> None:
    pytest.importorskip("onnxruntime")
    from vitdense.deploy.onnx_runner import OnnxModel

    path = run["tmp"] / "export" / "bands.onnx"
    main(["export", "--config", str(run["config"]), "--ckpt_path", str(run["ckpt"]), "--format", "onnx",
          "--output", str(path)])  # fmt: skip
    model = OnnxModel(path)
    assert model.metadata["mean"] == pytest.approx(run["stats"][0], rel=1e-6)
    assert model.metadata["std"] == pytest.approx(run["stats"][1], rel=1e-6)
    predicted = model.predict(pixels(run["raster"]))
    assert (predicted == run["reference"]).mean() > 0.99  # float32 on another runtime: a near tie may flip


def test_class_weights_derived_from_the_masks_go_with_the_export(tmp_path: Path) -> None:
    """loss.class_weights: a rule the fit resolved from the training masks; vitdense.load has no masks to resolve it
    again, so the export carries the weights (the checkpoint carries them too: SegmentationTask.on_save_checkpoint)."""
    import vitdense
    from tests.tiny import VIT_D2_W32
    from vitdense.deploy.export import export_safetensors

    task = SegmentationTask(backbone=VIT_D2_W32, num_classes=3, img_size=32, head={"channels": 8},
                            loss={"class_weights": "median_frequency"})  # fmt: skip
    task.ce_class_weights = torch.tensor([0.5, 1.0, 4.0])  # what setup("fit") derives from the masks
    loaded = vitdense.load(export_safetensors(task, tmp_path / "weighted"))
    torch.testing.assert_close(loaded.ce_class_weights, task.ce_class_weights)
