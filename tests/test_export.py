"""vitdense export: safetensors that vitdense.load rebuilds without a checkpoint, and ONNX graphs that onnxruntime
runs with PyTorch's numbers."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import vitdense
from tests.tiny import SWIN_W16, VIT
from vitdense import SegmentationTask
from vitdense.cli.entry import main
from vitdense.deploy.export import export_onnx, export_safetensors
from vitdense.tasks.inference import infer_logits


def checkpointed(config: Path, ckpt: Path):
    """The task of ``config`` with the checkpoint's weights, as `test` would score it."""
    task = main(["--config", str(config), "--trainer.logger", "false"], run=False).model
    task.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    return task.eval()


@pytest.mark.parametrize("kind", ["segmentation", "classification", "detection"])
def test_safetensors_export_loads_back_without_the_checkpoint(kind: str, tmp_path: Path, tiny_run) -> None:
    config, ckpt = tiny_run(tmp_path, kind)
    main(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--format", "safetensors"])
    (path,) = (tmp_path / "runs").glob(f"{kind}/version_0/{kind}.safetensors")
    loaded, reference = vitdense.load(path), checkpointed(config, ckpt)
    assert type(loaded) is type(reference) and loaded.class_names == reference.class_names
    for size in ((32, 32), (48, 40)):  # the training size and another
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            ours, theirs = loaded(images), reference(images)
        if kind == "detection":
            assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(ours, theirs, strict=True))
        else:
            assert torch.equal(ours, theirs)
    with pytest.raises(FileExistsError, match="exists"):  # never overwritten
        main(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(path)])


def test_lora_adapters_are_merged_into_the_export(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    backbone = {"name": VIT, "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2},
                "peft": {"r": 4, "alpha": 8, "target_modules": ["qkv"]}}  # fmt: skip
    task = SegmentationTask(backbone=backbone, num_classes=3, img_size=32, head={"channels": 8}).eval()
    with torch.no_grad():
        for name, p in task.backbone.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        images = torch.rand(1, 3, 32, 32)
        adapted = task(images)
        loaded = vitdense.load(export_safetensors(task, tmp_path / "lora"))
        assert loaded.backbone_cfg["peft"] is None and torch.allclose(loaded(images), adapted, atol=1e-5)


# Segmentation's graph (22 s on 2 cores) runs under -m slow, as does tests/test_restore.py's 4-band one;
# classification's graph (8 s) keeps the dense export in the default suite.
@pytest.mark.parametrize("kind", [pytest.param("segmentation", marks=pytest.mark.slow), "classification"])
def test_onnx_export_matches_pytorch_at_any_batch_and_size(kind: str, tmp_path: Path, tiny_run) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    config, ckpt = tiny_run(tmp_path, kind)  # trained at 32x32
    main(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--format", "onnx"])
    (path,) = (tmp_path / "runs").glob(f"{kind}/version_0/{kind}.onnx")
    session, reference = ort.InferenceSession(str(path)), checkpointed(config, ckpt)
    # The training size, sizes that need padding, a 6x12-token grid (as large as the 6-cell pooling), one wider
    # than the export's example, and a tall one.
    for batch, size in [(1, (32, 32)), (3, (37, 91)), (2, (48, 96)), (1, (40, 200)), (1, (150, 40))]:
        images = torch.rand(batch, 3, *size)
        with torch.no_grad():
            expected = reference(images).numpy()
        (out,) = session.run(None, {"images": images.numpy()})
        assert out.shape == expected.shape and np.abs(out - expected).max() < 1e-4, size
    from vitdense.deploy.onnx_runner import OnnxModel  # the file says what it is: a runner needs nothing else

    model = OnnxModel(path)
    assert model.task == kind and model.class_names == reference.class_names and model.in_chans == 3
    image = np.random.default_rng(0).random((37, 45, 3), dtype=np.float32)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    with torch.no_grad():  # segmentation as the task's val/test/predict run it (its windows, flip, scales)
        expected = (infer_logits(reference, batch, reference.inference_cfg, reference.input_size())
                    if kind == "segmentation" else reference(batch)).numpy()  # fmt: skip
    assert np.abs(model.logits(image) - expected).max() < 1e-4


@pytest.mark.slow  # ~30 s: tracing a Swin through the dynamo exporter
def test_onnx_export_of_a_windowed_backbone_at_new_sizes(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    task = SegmentationTask(backbone={**SWIN_W16, "pretrained": False}, num_classes=3, img_size=64,
                            head={"channels": 8}).eval()  # fmt: skip
    session = ort.InferenceSession(str(export_onnx(task, tmp_path / "swin.onnx")))
    for size in [(64, 64), (45, 130), (9, 40)]:  # 9 rows: less than one 4-pixel patch row per window
        images = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected = task(images).numpy()
        (out,) = session.run(None, {"images": images.numpy()})
        assert out.shape == expected.shape and np.abs(out - expected).max() < 1e-4, size


@pytest.mark.parametrize("fmt", ["safetensors", pytest.param("onnx", marks=pytest.mark.slow)])  # onnx: 12 s
def test_export_leaves_the_task_as_it_was(fmt: str, tmp_path: Path) -> None:
    """Exporting mid-training (from a notebook) neither merges the task's adapters nor puts it in eval mode: the
    optimizer's parameters are still the model's, and training goes on."""
    pytest.importorskip("peft")
    backbone = {"name": VIT, "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2},
                "peft": {"r": 2, "target_modules": ["qkv"]}}  # fmt: skip
    task = SegmentationTask(backbone=backbone, num_classes=3, img_size=32, head={"channels": 8}).train()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad])
    before = {k: v.clone() for k, v in task.state_dict().items()}
    (export_onnx if fmt == "onnx" else export_safetensors)(task, tmp_path / "model")
    assert task.training and task.backbone.adapters
    assert task.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in task.state_dict().items())
    in_model = {id(p) for p in task.parameters()}
    assert all(id(p) in in_model for group in optimizer.param_groups for p in group["params"])
    task(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert any(not torch.equal(v, before[k]) for k, v in task.state_dict().items() if "lora_" in k)


def exported_int8(tmp_path: Path, task: str, tiny_run: Callable) -> tuple[Path, Path, Path, str]:
    """A tiny fit of ``task`` put through `export --format onnx --quantize int8 --calibration 4`: its config, its
    checkpoint, the fp32 ONNX file and what the command printed."""
    config, ckpt = tiny_run(tmp_path, task)
    text = main(["export", "--config", str(config), "--ckpt_path", str(ckpt), "--format", "onnx", "--quantize",
                 "int8", "--calibration", "4"])  # fmt: skip
    (path,) = (tmp_path / "runs").glob(f"{task}/version_0/{task}.onnx")
    return config, ckpt, path, text


@pytest.mark.slow  # ~45 s: a tiny fit, an ONNX export, int8 calibration and scoring
def test_onnx_metadata_runner_and_int8(tmp_path: Path, tiny_run) -> None:
    """The ONNX file carries what a runner needs; OnnxModel (onnxruntime + numpy only) gives the model's class map;
    `export --quantize int8` writes a calibrated int8 copy and the fp32/int8 comparison on val."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitdense.deploy.onnx_runner import OnnxModel

    config, ckpt, path, text = exported_int8(tmp_path, "segmentation", tiny_run)
    model, reference = OnnxModel(path), checkpointed(config, ckpt)
    assert model.task == "segmentation" and model.class_names == reference.class_names and model.in_chans == 3
    assert model.metadata["palette"] == reference.palette()[: 3 * reference.num_classes]
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = reference(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).argmax(1)[0].numpy()
    assert np.mean(model.predict(image) == expected) > 0.999  # argmax ties aside
    int8 = OnnxModel(path.with_name("segmentation.int8.onnx"))
    assert int8.metadata["quantized"].startswith("int8") and int8.predict(image).shape == (40, 56)
    report = json.loads(path.with_name("segmentation.int8.json").read_text())
    assert report["metric"] == "mIoU" and report["images"] == 6 and 0 <= report["int8"] <= 1
    assert "val mIoU" in text and "ms per image" in text


@pytest.mark.slow  # ~30 s: a tiny fit, an ONNX export, int8 calibration and scoring
def test_int8_classification_reports_accuracy(tmp_path: Path, tiny_run) -> None:
    """`export --quantize int8` of a classifier: an int8 copy that predicts a class per image, and val accuracy
    and CPU time of fp32 and int8 in the report."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitdense.deploy.onnx_runner import OnnxModel

    _, _, path, text = exported_int8(tmp_path, "classification", tiny_run)
    int8 = OnnxModel(path.with_name("classification.int8.onnx"))
    assert int8.task == "classification" and int8.metadata["calibration_images"] == 4
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert int8.predict(images).shape == (3,) and int8.logits(images).shape == (3, len(int8.class_names))
    report = json.loads(path.with_name("classification.int8.json").read_text())
    assert report["metric"] == "acc" and report["images"] == 6 and 0 <= report["int8"] <= 1
    assert report["int8_s_per_image"] > 0 and "val acc" in text


def test_int8_of_a_detector_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Detectors export fp32 ONNX only: `--quantize int8` names the task and writes nothing (it once failed with a
    bare KeyError while reading calibration images, after writing the fp32 file)."""
    import yaml

    from tests.tiny import MODELS, PATCH8_VIT_D4, SPLITS

    task, extra, data = MODELS["detection"]
    config = tmp_path / "det.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"class_path": task, "init_args": {"backbone": PATCH8_VIT_D4, **extra}},
        "data": {"class_path": data, "init_args": SPLITS},
        "trainer": {"accelerator": "cpu", "default_root_dir": str(tmp_path / "runs")}}))  # fmt: skip
    with pytest.raises(ValueError, match="--quantize int8 covers segmentation and classification; DetectionTask"):
        main(["export", "--config", str(config), "--ckpt_path", str(tmp_path / "none.ckpt"), "--format", "onnx",
              "--quantize", "int8", "--output", str(tmp_path / "det.onnx")])  # fmt: skip
    assert not (tmp_path / "det.onnx").exists()
